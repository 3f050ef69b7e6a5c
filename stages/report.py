"""Stage report: reports/report.md and reports/figures/*.png from the metrics files; logged to MLflow."""

from __future__ import annotations

from ctca.config import Params, to_dict
from ctca.pipeline import EVAL_DIR, METRICS_DIR, REPORTS_DIR, stage_main
from ctca.report import build_report
from ctca.tracking import stage_run


def run(params: Params) -> None:
    with stage_run("report", {"data.dataset": params.data.dataset}, params.tracking.experiment) as run:
        path = build_report(METRICS_DIR, REPORTS_DIR, to_dict(params), EVAL_DIR)
        run.log_artifact(path, "report")
        run.log_artifact(REPORTS_DIR / "figures", "report/figures")


if __name__ == "__main__":
    stage_main("report", run)
