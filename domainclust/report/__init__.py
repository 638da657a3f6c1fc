"""The run report: curves, clusters, filters, neighbours and the low-shot verdict on one page."""

from domainclust.report.build import (
    ReportResult,
    ReportSettings,
    report_after_pretrain,
    write_report,
)

__all__ = ["ReportResult", "ReportSettings", "report_after_pretrain", "write_report"]
