"""Compare DVC experiments from their MLflow runs: one row per experiment, aggregated over seeds.

Each DVC experiment is one MLflow parent run whose children are its stage runs (``ctca.tracking``).
An experiment's row joins its latest finished ``train`` run (method, chain depth, seed, parameters)
with its latest finished ``evaluate`` run (WER, del %, ins % per split, ms per video). Groups (e.g. by
``model.method`` or ``tam.depth``) then show mean ± standard deviation over the experiments (seeds) in
the group, and how many there were, so a difference can be read against the seed-to-seed spread.

MLflow's database is not in git. The reports built from many experiments (``ctca ablation report``,
``ctca study report``) therefore also write the rows they use as *records* (JSON Lines, committed next
to the report) and read them back with MLflow's rows (:func:`load_records`, :func:`merge_records`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

TRAIN_PARAMS = ("model.method", "tam.depth", "train.seed", "train.epochs", "data.dataset")
EVAL_METRICS = ("dev_wer", "dev_del", "dev_ins", "test_wer", "test_del", "test_ins", "test_ms_per_video")


def collect(experiment: str = "ctca", tracking_uri: str | None = None, stages: Sequence[str] = ()) -> list[dict]:
    """One dict per DVC experiment with a finished train and evaluate run (plus ``stages`` runs' metrics).

    Rows are ordered by the start of their training, oldest first. Keys: ``exp`` (DVC experiment name),
    ``started`` (the train run's start, ms since the epoch), ``commit`` (the git commit it ran from: an
    experiment's baseline commit), the :data:`TRAIN_PARAMS` as logged, ``params`` and
    ``train_metrics`` (all of the train run's, latest values), ``parameters`` (inference parameter
    count), the :data:`EVAL_METRICS`, ``protocol``, and for each extra stage ``<stage>.<metric>`` (the
    metric's latest value) and ``<stage>_run`` (its run id, for per-epoch histories).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from ctca.tracking import tracking_uri as default_uri

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=50000,
                              filter_string="tags.`dvc.role` = 'stage' and attributes.status = 'FINISHED'")
    latest: dict[tuple[str, str], object] = {}  # (parent run, stage) -> latest run
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            continue  # a plain `dvc repro` run belongs to no experiment
        key = (parent, run.data.tags.get("dvc.stage", ""))
        if key not in latest or run.info.start_time > latest[key].info.start_time:
            latest[key] = run
    rows = []
    for parent in sorted({p for p, _ in latest}):
        train, ev = latest.get((parent, "train")), latest.get((parent, "evaluate"))
        if train is None or ev is None:
            continue
        row = {"exp": train.data.tags.get("dvc.exp_name", parent), "parent_run": parent, "train_run": train.info.run_id,
               "started": train.info.start_time, "commit": train.data.tags.get("mlflow.source.git.commit"),
               "parameters": train.data.metrics.get("parameters"), "protocol": ev.data.params.get("protocol")}
        row.update({k: train.data.params.get(k) for k in TRAIN_PARAMS})
        row["params"], row["train_metrics"] = dict(train.data.params), dict(train.data.metrics)
        row.update({k: ev.data.metrics.get(k) for k in EVAL_METRICS})
        for stage in stages:
            run = latest.get((parent, stage))
            if run is not None:
                row.update({f"{stage}.{k}": v for k, v in run.data.metrics.items()})
                row[f"{stage}_run"] = run.info.run_id
        rows.append(row)
    return sorted(rows, key=lambda r: r["started"])  # oldest training first


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for a single value) and count of the non-missing values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)


def group(rows: Sequence[dict], by: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get(by)), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _pm(rows: Sequence[dict], key: str, digits: int = 2) -> str:
    m, s, n = mean_std(r.get(key) for r in rows)
    if n == 0:
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def markdown_table(rows: Sequence[dict], by: str = "model.method") -> list[str]:
    """The per-group table: WER dev/test with del/ins (mean ± std over seeds), parameters, ms per video."""
    lines = [f"| {by} | runs (seeds) | dev WER % | dev del / ins % | test WER % | test del / ins % | "
             "parameters (inference) | inference ms / video |",
             "|---|---|---|---|---|---|---|---|"]
    for value, members in group(rows, by).items():
        seeds = ", ".join(sorted({str(r.get("train.seed")) for r in members}, key=_sort_key))
        lines.append(
            f"| {value} | {len(members)} ({seeds}) | **{_pm(members, 'dev_wer')}** | "
            f"{_pm(members, 'dev_del', 1)} / {_pm(members, 'dev_ins', 1)} | **{_pm(members, 'test_wer')}** | "
            f"{_pm(members, 'test_del', 1)} / {_pm(members, 'test_ins', 1)} | {_pm(members, 'parameters', 0)} | "
            f"{_pm(members, 'test_ms_per_video', 1)} |")
    return lines


def comparison_markdown(rows: Sequence[dict], by: str = "model.method", title: str = "") -> str:
    """Markdown: the grouped table and the per-experiment rows it was computed from."""
    protocols = sorted({str(r.get("protocol")) for r in rows})
    lines = [f"# {title or f'Experiments compared by {by}'}", "",
             f"{len(rows)} DVC experiments from MLflow; scoring protocol: {', '.join(protocols) or '–'}. "
             "Values are mean ± sample standard deviation over the experiments (seeds) of each group.", "",
             *markdown_table(rows, by), "", "## Experiments", "",
             "| experiment | method | depth | seed | dev WER % | test WER % | parameters |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (str(r.get(by)), str(r.get("train.seed")), r["exp"])):
        lines.append(f"| {r['exp']} | {r.get('model.method')} | {r.get('tam.depth')} | {r.get('train.seed')} | "
                     f"{_fmt(r.get('dev_wer'))} | {_fmt(r.get('test_wer'))} | {_fmt(r.get('parameters'), 0)} |")
    return "\n".join(lines) + "\n"


def _fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{float(x):.{digits}f}"


def load_records(path: Path | str, required: Sequence[str] = ("train_run",)) -> list[dict]:
    """The rows a previous report recorded at ``path`` (none when it does not exist). A line that is not a
    JSON object with the ``required`` keys is refused with its file and line number: a half-merged file
    must not silently drop seeds from a report."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg}); expected one run record per line") from None
        missing = [k for k in required if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"{path}:{n}: a run record needs {', '.join(required)}; missing {', '.join(missing)}")
        records.append(record)
    return records


def merge_records(recorded: Sequence[dict], tracked: Sequence[dict]) -> list[dict]:
    """One row per train run: MLflow's (``tracked``) where both have it, ordered by training start."""
    by_run = {e["train_run"]: e for e in recorded}
    by_run.update({e["train_run"]: e for e in tracked})
    return sorted(by_run.values(), key=lambda e: e.get("started") or 0)


def write_records(path: Path | str, records: Iterable[dict]) -> int:
    """Write ``records`` to ``path``, one JSON object a line (keys sorted, so a rerun diffs cleanly); how many."""
    lines = [json.dumps(r, sort_keys=True) for r in records]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{line}\n" for line in lines))
    return len(lines)
