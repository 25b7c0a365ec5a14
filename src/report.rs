//! The pre/post report: report.json, report.md and a self-contained report.html with plots.
