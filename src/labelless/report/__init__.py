"""``labelless report``: a static HTML page of one or several runs (see :mod:`.build`)."""

from labelless.report.build import REPORT_FILENAME, build_report, default_report_dir

__all__ = ["REPORT_FILENAME", "build_report", "default_report_dir"]
