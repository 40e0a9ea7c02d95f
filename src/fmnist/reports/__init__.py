"""Reports: matplotlib figures and a self-contained HTML report of a run."""

from fmnist.reports.run_report import write_run_report

__all__ = ["write_run_report"]
