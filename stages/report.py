"""Stage report: reports/report.md and reports/figures/*.png (training, IIW and CTC curves); logged to MLflow.

The "Methods compared" section reads the finished DVC experiments from MLflow; when the store cannot be
read, the section and the stage log say so and why (the report is still written).
"""

from __future__ import annotations

import logging

from ctca.config import Params, to_dict
from ctca.pipeline import FIGURES_DIR, stage_main
from ctca.report import build_report
from ctca.tracking import stage_run

log = logging.getLogger(__name__)


def finished_experiments(experiment: str, depth: int) -> tuple[list[dict], str | None]:
    """The finished DVC experiments in MLflow at chain depth ``depth`` (the depth study's shallower ladders
    are not methods), and ``None``; or ``[]`` and why the store could not be read."""
    from ctca.compare import collect
    from ctca.tracking import tracking_uri

    uri = tracking_uri()
    try:
        rows = collect(experiment, uri)
    except Exception as exc:  # any failure to read the store: the report says so instead of failing
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else '(no message)'}"
        note = f"the MLflow store `{uri}` (experiment `{experiment}`) could not be read ({reason})."
        log.warning("methods not compared: %s", note)
        return [], note
    return [r for r in rows if r.get("tam.depth") == str(depth)], None


def run(params: Params) -> None:
    methods, note = finished_experiments(params.tracking.experiment, params.tam.depth)
    logged = {"data.dataset": params.data.dataset, "tam.depth": params.tam.depth}
    with stage_run("report", logged, params.tracking.experiment) as run:
        path = build_report(".", to_dict(params), methods=methods, methods_note=note)
        run.log_artifact(path, "report")
        run.log_artifact(FIGURES_DIR, "report/figures")


if __name__ == "__main__":
    stage_main("report", run)
