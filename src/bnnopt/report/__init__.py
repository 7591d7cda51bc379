"""bnnopt.report: tables (mean +- std over seeds) and plots from run records."""
from bnnopt.report.plots import plot_curves  # noqa: F401
from bnnopt.report.tables import aggregate, group_runs, markdown_table, mean_std  # noqa: F401
