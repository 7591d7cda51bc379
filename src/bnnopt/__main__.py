from bnnopt.cli.main import main

raise SystemExit(main())
