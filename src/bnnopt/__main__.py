from bnnopt.cli import main

raise SystemExit(main())
