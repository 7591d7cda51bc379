"""bnnopt.cli: the command line (``bnnopt <command> ...``), a thin user of the library."""
from bnnopt.cli.main import main  # noqa: F401
