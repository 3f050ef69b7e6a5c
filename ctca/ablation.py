"""The CTCA poster's tables on SynthSign (docs/methods.md#ablations): queue them, then report them from MLflow.

Each table row is a set of params overrides (:data:`ROWS`) on top of the project's ``params.yaml``; each
(row, seed) is one DVC experiment ``<row>-s<seed>`` queued with ``dvc exp run --queue``. The report finds
a row's experiments by their logged params, not their names, so a row shared by two tables (the depth-4
baseline, the full CTCA) or a chain-depth study experiment is run once. Differences are paired by seed,
and each poster claim ("X beats Y") is judged on the paired differences: reproduced when the mean
difference exceeds two standard errors (over at least 3 seeds) in the poster's direction, reversed when it
does so the other way, not significant otherwise.

The MLflow database is not in git, and these runs cost CPU-hours, so every report also writes the runs its
tables use to :data:`RECORDS` (JSON Lines, committed with the tables). The next report reads them back
along with MLflow: a fresh clone reproduces the tables, and new seeds are paired with the recorded ones.
"""

from __future__ import annotations

import math
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ctca.compare import _pm, mean_std, write_records
from ctca.compare import load_records as _load_records
from ctca.config import parse_params, to_dict

CCKD = ("l2g", "g2l", "rc", "cmd")
# what a ctca run did before a key existed: runs logged without the key are matched against this value
LEGACY = {"ctca.reduction": "frame_mean", "ctca.l2g_negatives": "batch", "ctca.g2l_form": "kl",
          "ctca.cmd_target": "classifier", "ctca.mask_padding": False, "ctca.global_path": "blstm",
          "ctca.dilations": [1, 2, 4, 8], "ctca.fusion": "none", "tam.mask_padding": False}
# the first reconstruction (the one the revision replaced): every switch and weight it ran with
FIRST = {**{k: LEGACY[k] for k in ("ctca.reduction", "ctca.l2g_negatives", "ctca.g2l_form", "ctca.cmd_target",
                                    "ctca.mask_padding")},
         "ctca.downsample": "pool4", "ctca.global_layers": 2, "loss.weights.l2g": 1.0, "loss.weights.g2l": 1.0,
         "loss.weights.rc": 1.0, "loss.weights.cmd": 0.1}
NOT_COMPARED = {"train.seed", "train.threads", "train.nproc", "train.device", "train.checkpoint_steps",
                "iiw.interval"}  # how a run was executed, not what it trained
ROW_SETTINGS = {"iiw.interval": 0}  # the tables need the final model's WER only
RECORDS = Path("reports/ctca-runs.jsonl")  # the runs behind reports/ctca-tables.md, one JSON object a line
RECORD_KEYS = ("train_run", "train.seed", "params", "dev_wer", "test_wer")  # what a record cannot do without


def only(*terms: str) -> dict:
    """CTCA with exactly these CCKD terms on."""
    return {"model.method": "ctca", **{f"loss.{t}": t in terms for t in CCKD}}


ROWS: dict[str, dict] = {
    "baseline-d4": {"model.method": "baseline", "tam.depth": 4},
    "baseline-d4-masked": {"model.method": "baseline", "tam.depth": 4, "tam.mask_padding": True},
    "baseline-d3": {"model.method": "baseline", "tam.depth": 3},
    "baseline-d2": {"model.method": "baseline", "tam.depth": 2},
    "vac": {"model.method": "vac"},
    "smkd": {"model.method": "smkd"},
    "ctca": only(*CCKD),
    "ctca-vanilla": only(),
    "ctca-A": only("l2g"),
    "ctca-A-noI": {**only("l2g"), "ctca.l2g_mi": False},
    "ctca-B": only("g2l"),
    "ctca-C": only("l2g", "g2l"),
    "ctca-D": only("l2g", "g2l", "rc"),
    "ctca-D-noomega": {**only("l2g", "g2l", "rc"), "ctca.g2l_omega": False},
    "ctca-E": only("cmd"),
    "ctca-fuse-concat": {**only(), "ctca.fusion": "concat"},
    "ctca-fuse-add": {**only(), "ctca.fusion": "add"},
    "ctca-fuse-attention": {**only(), "ctca.fusion": "attention"},
    "ctca-f5f5": {**only(*CCKD), "ctca.local_kernels": [5, 5]},
    "ctca-dilated": {**only(*CCKD), "ctca.global_path": "dilated"},
    "ctca-first": {**only(*CCKD), **FIRST},
    "first-vanilla": {**only(), **FIRST},
    "first-nol2g": {**only("g2l", "rc", "cmd"), **FIRST},
    "first-nocmd": {**only("l2g", "g2l", "rc"), **FIRST},
    "first-glob1": {**only(*CCKD), **FIRST, "ctca.global_layers": 1},
    "first-fullrate": {**only(*CCKD), **FIRST, "ctca.downsample": "none"},
}


@dataclass(frozen=True)
class Row:
    label: str
    row: str  # key of ROWS
    poster: tuple[float, float] | None = None  # the poster's PHOENIX14 dev / test WER


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    rows: tuple[Row, ...]
    reference: str  # the row the paired differences are taken against
    claims: tuple[tuple[str, str], ...] = ()  # (better, worse): the poster says `better` has the lower WER


TABLES = (
    Table("diagnosis", "Diagnosis: the first reconstruction and one change at a time", (
        Row("first reconstruction", "ctca-first"), Row("all CCKD terms off", "first-vanilla"),
        Row("L_l2g off", "first-nol2g"), Row("L_cmd off", "first-nocmd"), Row("1 BiLSTM layer", "first-glob1"),
        Row("full frame rate (downsample none)", "first-fullrate")), reference="ctca-first"),
    Table("table5", "Table 5: CCKD loss ablation", (
        Row("Baseline (chain depth 4)", "baseline-d4", (21.8, 22.1)), Row("Vanilla SDPN", "ctca-vanilla", (21.7, 21.9)),
        Row("SDPN A (l2g)", "ctca-A", (21.0, 21.1)), Row("SDPN A - I(.,.)", "ctca-A-noI", (21.3, 21.5)),
        Row("SDPN B (g2l)", "ctca-B", (20.8, 20.7)), Row("SDPN C (l2g, g2l)", "ctca-C", (20.4, 20.6)),
        Row("SDPN D (l2g, g2l, rc)", "ctca-D", (20.0, 20.4)),
        Row("SDPN D - w(.,.)", "ctca-D-noomega", (20.2, 20.6)), Row("SDPN E (cmd)", "ctca-E", (21.3, 21.0)),
        Row("CTCA (all four)", "ctca", (19.5, 20.1))), reference="ctca-vanilla",
        claims=(("ctca-vanilla", "baseline-d4"), ("ctca-A", "ctca-vanilla"), ("ctca-A", "ctca-A-noI"),
                ("ctca-B", "ctca-vanilla"), ("ctca-C", "ctca-A"), ("ctca-C", "ctca-B"), ("ctca-D", "ctca-C"),
                ("ctca-D", "ctca-D-noomega"), ("ctca-E", "ctca-vanilla"), ("ctca", "ctca-D"),
                ("ctca", "baseline-d4"))),
    Table("table6", "Table 6: L_l2g against fusing the local features at inference", (
        Row("SDPN, no fusion (Vanilla)", "ctca-vanilla", (21.7, 21.8)), Row("L_l2g (SDPN A)", "ctca-A", (21.0, 21.1)),
        Row("concatenation", "ctca-fuse-concat", (22.7, 23.6)), Row("point-wise addition", "ctca-fuse-add", (21.2, 22.3)),
        Row("attention", "ctca-fuse-attention", (22.2, 22.6))), reference="ctca-vanilla",
        claims=(("ctca-A", "ctca-fuse-concat"), ("ctca-A", "ctca-fuse-add"), ("ctca-A", "ctca-fuse-attention"))),
    Table("methods", "Method comparison (chain depth 4 unless named)", (
        Row("Baseline, depth 4", "baseline-d4"),
        Row("Baseline, depth 4, padding out of the TAM's BatchNorm", "baseline-d4-masked"),
        Row("Baseline, depth 3", "baseline-d3"),
        Row("Baseline, depth 2", "baseline-d2"), Row("VAC", "vac", (21.2, 22.3)), Row("SMKD", "smkd", (20.8, 21.0)),
        Row("CTCA, revised reconstruction", "ctca", (19.5, 20.1)), Row("CTCA, first reconstruction", "ctca-first")),
        reference="ctca-first",
        claims=(("ctca", "ctca-first"), ("ctca", "vac"), ("ctca", "smkd"), ("ctca", "baseline-d4"),
                ("baseline-d4-masked", "baseline-d4"))),
    Table("table78", "Tables 7 and 8: local and global path variants", (
        Row("F3-F3-F3 + BLSTM (CTCA)", "ctca", (19.5, 20.1)), Row("F5-F5 local path", "ctca-f5f5", (20.6, 20.6)),
        Row("dilated-convolution global path", "ctca-dilated", (22.2, 22.6))), reference="ctca",
        claims=(("ctca", "ctca-f5f5"), ("ctca", "ctca-dilated"))),
)
TABLE_KEYS = tuple(t.key for t in TABLES)


def table_rows(tables: Sequence[str]) -> list[str]:
    """The row keys of ``tables``, in table order, each once."""
    return list(dict.fromkeys(r.row for t in TABLES if t.key in tables for r in t.rows))


def _set(tree: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[last] = value


def expected_params(row: str, base: dict) -> dict[str, str]:
    """The flattened params (as MLflow logs them, strings) of ``row`` on top of ``base`` (params.yaml)."""
    from ctca.tracking import _flat_params

    tree = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    for k, v in {**ROWS[row], **ROW_SETTINGS}.items():
        _set(tree, k, v)
    return {k: str(v) for k, v in _flat_params(to_dict(parse_params(tree))).items()}


def matches(logged: dict[str, str], expected: dict[str, str]) -> bool:
    """Whether a train run with ``logged`` params trained ``expected``: every key it logged (sections its
    method does not read are not logged) agrees, and a key of a logged section that predates the run
    agrees with :data:`LEGACY`."""
    sections = {k.split(".")[0] for k in logged}
    for key, value in expected.items():
        if key in NOT_COMPARED:
            continue
        if key in logged:
            if logged[key] != value:
                return False
        elif key in LEGACY and key.split(".")[0] in sections:
            if str(LEGACY[key]) != value:
                return False
    return True


def assign(experiments: Sequence[dict], base: dict) -> dict[str, list[dict]]:
    """Row key -> the experiments (``ctca.compare.collect`` rows) that trained it, one per seed (the latest)."""
    out: dict[str, list[dict]] = {}
    for row in ROWS:
        expected = expected_params(row, base)
        by_seed: dict[str, dict] = {}
        for e in sorted(experiments, key=lambda e: e.get("started") or 0):
            if matches(e.get("params", {}), expected):
                by_seed[str(e.get("train.seed"))] = e  # the latest training of a (row, seed) wins
        out[row] = [by_seed[s] for s in sorted(by_seed, key=lambda s: (len(s), s))]
    return out


def queue(tables: Sequence[str], seeds: Sequence[int], done: dict[str, list[dict]], cwd: Path | str = ".",
          rows: Sequence[str] = ()) -> list[str]:
    """Queue ``<row>-s<seed>`` for every row of ``tables`` (or only ``rows``, in that order) and seed without
    a finished experiment in ``done``."""
    names = []
    for row in rows or table_rows(tables):
        have = {str(e.get("train.seed")) for e in done.get(row, [])}
        for seed in seeds:
            if str(seed) in have:
                continue
            name = f"{row}-s{seed}"
            cmd = ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.seed={seed}"]
            for k, v in {**ROWS[row], **ROW_SETTINGS}.items():
                cmd += ["-S", f"{k}={_yaml_value(v)}"]
            subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
            names.append(name)
    return names


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def paired(better: Sequence[dict], worse: Sequence[dict], metric: str) -> tuple[float, float, int]:
    """Mean and standard error over the seeds both have of metric(worse) - metric(better)."""
    a = {str(e.get("train.seed")): e.get(metric) for e in better}
    b = {str(e.get("train.seed")): e.get(metric) for e in worse}
    diffs = [float(b[s]) - float(a[s]) for s in a if s in b and a[s] is not None and b[s] is not None]
    if not diffs:
        return math.nan, math.nan, 0
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), se, len(diffs)


MIN_SEEDS = 3  # a standard error from 2 seeds has 1 degree of freedom: 2 of them would mean nothing


def verdict(mean: float, se: float, n: int) -> str:
    if n < MIN_SEEDS or math.isnan(se):
        return f"inconclusive (fewer than {MIN_SEEDS} paired seeds)"
    if mean > 2 * se:
        return "**reproduced**"
    if mean < -2 * se:
        return "not reproduced (reversed)"
    return "not reproduced (difference within 2 s.e.)"


def _count(rows: Sequence[dict], key: str) -> str:
    m, _, n = mean_std(r.get(key) for r in rows)
    return f"{m:,.0f}" if n else "–"


def _diff(m: float, se: float, n: int) -> str:
    if n == 0:
        return "–"
    return f"{m:+.2f} ± {se:.2f}" if n > 1 else f"{m:+.2f}"


def with_grad_ratios(experiments: Sequence[dict], tracking_uri: str | None = None) -> list[dict]:
    """``experiments`` with ``grad_ratios`` (term -> the value of ``grad_ratio_<term>`` at every logged epoch)
    read from their MLflow train runs, for those that do not carry it yet (records already do)."""
    todo = [e for e in experiments if "grad_ratios" not in e]
    if not any(k.startswith("grad_ratio_") for e in todo for k in e.get("train_metrics", {})):
        return [dict(e) for e in experiments]
    import mlflow
    from mlflow.tracking import MlflowClient

    from ctca.tracking import tracking_uri as default_uri

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    client = MlflowClient()
    out = []
    for e in experiments:
        e = dict(e)
        if "grad_ratios" not in e:
            e["grad_ratios"] = {
                key.removeprefix("grad_ratio_"): [m.value for m in sorted(
                    client.get_metric_history(e["train_run"], key), key=lambda m: m.step)]
                for key in sorted(e.get("train_metrics", {})) if key.startswith("grad_ratio_")}
        out.append(e)
    return out


def grad_ratio_means(experiments: Sequence[dict]) -> dict[str, float]:
    """Term -> gradient ratio at the SPM output, averaged over every logged epoch of every experiment given
    (their ``grad_ratios``: :func:`with_grad_ratios`)."""
    values: dict[str, list[float]] = {}
    for e in experiments:
        for term, history in e.get("grad_ratios", {}).items():
            values.setdefault(term, []).extend(history)
    return {k: statistics.fmean(v) for k, v in sorted(values.items()) if v}


def save_records(assigned: dict[str, list[dict]], path: Path | str = RECORDS) -> int:
    """Write every row's experiments (:func:`assign`) to ``path``, row by row in :data:`ROWS` order and by
    seed, each with its ``row``; the number written. A run that a later run of the same (row, seed)
    replaced is not kept: the file holds what the tables show."""
    return write_records(path, ({**e, "row": row} for row in ROWS for e in assigned.get(row, [])))


def load_records(path: Path | str = RECORDS) -> list[dict]:
    """The runs a previous report recorded (``ctca.compare.load_records``, each with :data:`RECORD_KEYS`)."""
    return _load_records(path, RECORD_KEYS)


def report(assigned: dict[str, list[dict]], tables: Sequence[str] = TABLE_KEYS, ratios: bool = True,
           command: str = "") -> str:
    """Markdown of ``tables``: per row mean ± sd over seeds, paired differences, the poster's values and
    each claim's verdict; then the CCKD gradient ratios of the CTCA rows."""
    lines = ["# CTCA's tables on SynthSign", "",
             "Generated by `ctca ablation report` from the MLflow runs of the DVC experiments and the runs recorded "
             f"in `{RECORDS}` (written with these tables); nothing here is edited by hand."
             + (f" Rerun: `{command}`." if command else ""), "",
             "WER % on SynthSign (greedy decoding, protocol none): mean ± sample standard deviation over seeds. "
             "Δ = row − reference, paired by seed: mean ± standard error. A claim \"X beats Y\" is **reproduced** "
             "when WER(Y) − WER(X), paired by seed, exceeds two standard errors over at least 3 seeds (fewer: "
             "inconclusive); the poster's numbers are "
             "PHOENIX-2014's and are shown for the direction only. CTCA rows are our reconstruction "
             "(docs/methods.md#ctca).", ""]
    for table in (t for t in TABLES if t.key in tables):
        ref = assigned.get(table.reference, [])
        lines += [f"## {table.title}", "", f"Reference for Δ: `{table.reference}`.", "",
                  "| row | experiments | seeds | dev WER | test WER | Δ dev | Δ test | poster dev / test | "
                  "local-path dev WER (last epoch) | parameters (inference) | ms / video (test) | code (commit) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in table.rows:
            members = assigned.get(r.row, [])
            seeds = ", ".join(str(e.get("train.seed")) for e in members) or "–"
            d_dev = paired(ref, members, "dev_wer") if r.row != table.reference else (math.nan, math.nan, 0)
            d_test = paired(ref, members, "test_wer") if r.row != table.reference else (math.nan, math.nan, 0)
            local = [{"v": e.get("train_metrics", {}).get("dev_wer_local")} for e in members]
            poster = f"{r.poster[0]} / {r.poster[1]}" if r.poster else "–"
            lines.append(f"| {r.label} | `{r.row}` | {seeds} | **{_pm(members, 'dev_wer')}** | {_pm(members, 'test_wer')} "
                         f"| {_diff(*d_dev)} | {_diff(*d_test)} | {poster} | {_pm(local, 'v')} | "
                         f"{_count(members, 'parameters')} | {_pm(members, 'test_ms_per_video', 1)} | "
                         f"{', '.join(dict.fromkeys(str(e.get('commit') or '?')[:7] for e in members)) or '–'} |")
        if table.claims:
            lines += ["", "| claim (the poster's, except those between our own variants) | paired dev Δ (n) | "
                      "verdict (dev) | paired test Δ (n) | verdict (test) |",
                      "|---|---|---|---|---|"]
            labels = {r.row: r.label for r in table.rows}
            for better, worse in table.claims:
                dev = paired(assigned.get(better, []), assigned.get(worse, []), "dev_wer")
                test = paired(assigned.get(better, []), assigned.get(worse, []), "test_wer")
                lines.append(f"| {labels[better]} beats {labels[worse]} | {_diff(*dev)} ({dev[2]}) | {verdict(*dev)} "
                             f"| {_diff(*test)} ({test[2]}) | {verdict(*test)} |")
        lines.append("")
    if ratios:
        lines += ["## Gradient ratios at the SPM output", "",
                  "‖∂(w·L_term)/∂SPM output‖ / ‖∂(Σ CTC)/∂SPM output‖, measured every 10th training step and "
                  "averaged over all epochs and seeds (`grad_ratio_<term>` in each train run).", "",
                  "| row | " + " | ".join(("ctc_global", "ctc_local", *CCKD)) + " |", "|---|" + "---|" * 6]
        for row in table_rows(tables):
            if not row.startswith(("ctca", "first")) or not assigned.get(row):
                continue
            means = grad_ratio_means(assigned[row])
            if means:
                lines.append(f"| `{row}` | " + " | ".join(
                    f"{means[k]:.3f}" if k in means else "–" for k in ("ctc_global", "ctc_local", *CCKD)) + " |")
        lines.append("")
    return "\n".join(lines)
