"""Stage report: reports/report.md and reports/figures/*.png from the metrics files; logged to MLflow."""

from __future__ import annotations

from ctca.config import Params, to_dict
from ctca.pipeline import EVAL_DIR, METRICS_DIR, REPORTS_DIR, stage_main
from ctca.report import build_report
from ctca.tracking import stage_run


def finished_experiments(experiment: str) -> list[dict]:
    """Every finished DVC experiment in MLflow (for the per-method table); [] if the store cannot be read."""
    from ctca.compare import collect

    try:
        return collect(experiment)
    except Exception as exc:  # the report must not fail because the tracking store is unreachable
        print(f"report: experiments not read from MLflow ({exc})")
        return []


def run(params: Params) -> None:
    # methods are compared at this run's chain depth (the depth study's shallower ladders are not methods)
    methods = [r for r in finished_experiments(params.tracking.experiment) if r.get("tam.depth") == str(params.tam.depth)]
    with stage_run("report", {"data.dataset": params.data.dataset}, params.tracking.experiment) as run:
        path = build_report(METRICS_DIR, REPORTS_DIR, to_dict(params), EVAL_DIR, methods=methods)
        run.log_artifact(path, "report")
        run.log_artifact(REPORTS_DIR / "figures", "report/figures")


if __name__ == "__main__":
    stage_main("report", run)
