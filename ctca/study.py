"""The chain-depth study (CTCA's empirical study, docs/chain-depth.md): queue it, then gather it from MLflow.

``queue_depth_study`` queues one DVC experiment per (``tam.depth``, ``train.seed``) with
``dvc exp run --queue``; ``dvc queue start -j N`` runs them (each in its own temporary clone, all
logging to the project's MLflow store). ``depth_report`` reads the finished experiments back from
MLflow and from the records of earlier reports (``runs.jsonl`` next to it, committed: ``ctca.compare``)
and writes the paper's comparison: IIW of the SPM and of the TAM against depth (final model),
their per-epoch curves by depth, and WER against depth, each with error bars over seeds.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ctca.compare import _sort_key, group, mean_std, write_records  # noqa: E402

ESTIMATORS = {"fisher_group": "IIW, paper estimator (Fisher)", "official": "IIW, reference-code estimator"}


def queue_depth_study(depths: Sequence[int], seeds: Sequence[int], extra: Sequence[str] = (),
                      cwd: Path | str = ".") -> list[str]:
    """Queue ``depth{d}-s{s}`` experiments; returns their names. ``extra``: more ``-S key=value`` overrides."""
    names = []
    for d in depths:
        for s in seeds:
            name = f"depth{d}-s{s}"
            cmd = ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"tam.depth={d}", "-S", f"train.seed={s}"]
            for e in extra:
                cmd += ["-S", e]
            subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
            names.append(name)
    return names


EPOCH_METRICS = ("iiw_spm_fisher_group", "iiw_tam_fisher_group")  # the per-epoch curves the report draws
RECORD_KEYS = ("train_run", "tam.depth", "train.seed", "iiw.final_iiw_spm_fisher_group")


def with_iiw_epochs(rows: Sequence[dict], tracking_uri: str | None = None) -> list[dict]:
    """``rows`` with ``iiw_epochs`` ({metric: [[epoch, value], ...]} for :data:`EPOCH_METRICS`) read from each
    row's iiw run (``iiw_run``: the iiw stage logs the snapshots' IIW at step = epoch), for rows that do not
    carry it yet (records already do). Step 0 is not a curve point: the iiw stage logs the selected
    model's values without a step."""
    if all("iiw_epochs" in r for r in rows):
        return [dict(r) for r in rows]
    import mlflow
    from mlflow.tracking import MlflowClient

    from ctca.tracking import tracking_uri as default_uri

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    client = MlflowClient()
    out = []
    for r in rows:
        r = dict(r)
        if "iiw_epochs" not in r:
            r["iiw_epochs"] = {metric: sorted([m.step, m.value] for m in client.get_metric_history(r["iiw_run"], metric)
                                              if m.step >= 1) for metric in EPOCH_METRICS}
        out.append(r)
    return out


def epoch_curves(rows: Sequence[dict], metric: str) -> dict[str, dict[int, list]]:
    """``metric`` per epoch (the rows' ``iiw_epochs``: :func:`with_iiw_epochs`), grouped by depth:
    {depth: {epoch: [values over seeds]}}."""
    out: dict[str, dict[int, list]] = {}
    for row in rows:
        for step, value in row.get("iiw_epochs", {}).get(metric, []):
            out.setdefault(str(row["tam.depth"]), {}).setdefault(int(step), []).append(value)
    return out


def study_rows(experiments: Sequence[dict]) -> list[dict]:
    """The chain-depth study's experiments among ``experiments`` (oldest first): baseline runs with an iiw
    stage that measured IIW during training (``iiw.interval`` > 0; the ablation tables' baseline rows run
    with 0 and draw no curves), the latest per (depth, seed), so a rerun replaces a run, not doubles it."""
    latest: dict[tuple[str, str], dict] = {}
    for r in sorted(experiments, key=lambda r: r.get("started") or 0):
        if (r.get("model.method") == "baseline" and "iiw.final_iiw_spm_fisher_group" in r
                and str(r.get("params", {}).get("iiw.interval", "1")) != "0"):
            latest[(str(r.get("tam.depth")), str(r.get("train.seed")))] = r
    return sorted(latest.values(), key=lambda r: r.get("started") or 0)


def save_records(rows: Sequence[dict], path: Path | str) -> int:
    """Record the study's rows (with their ``iiw_epochs``) at ``path``, by depth and seed; how many."""
    return write_records(path, sorted(rows, key=lambda r: (_sort_key(str(r["tam.depth"])), _sort_key(str(r["train.seed"])))))


def log_stats(values) -> tuple[float, float, float, int]:
    """Geometric mean and its ×/÷ geometric-std band (for values spanning orders of magnitude, on a log axis)."""
    logs = [math.log10(v) for v in values if v is not None and v > 0]
    if not logs:
        return math.nan, math.nan, math.nan, 0
    m, s, n = mean_std(logs)
    return 10 ** m, 10 ** (m - s), 10 ** (m + s), n


def _errorbar(ax, groups: dict[str, list[dict]], key: str, label: str, fmt: str = "o-", log: bool = False) -> None:
    xs, ms, lo, hi = [], [], [], []
    for depth, members in groups.items():
        if log:
            m, low, high, n = log_stats(r.get(key) for r in members)
        else:
            m, s, n = mean_std(r.get(key) for r in members)
            low, high = m - s, m + s
        if n:
            xs.append(int(depth))
            ms.append(m)
            lo.append(m - low)
            hi.append(high - m)
    if xs:
        ax.errorbar(xs, ms, yerr=[lo, hi], fmt=fmt, capsize=4, label=label)


def depth_report(rows: Sequence[dict], out_md: Path, fig_dir: Path) -> Path:
    """``out_md`` (``ctca study report``: the README of reports/study/) and its figures in ``fig_dir``: IIW (SPM,
    TAM) and WER against chain depth, IIW per epoch by depth. The markdown links ``figures/<name>.png``, so
    ``fig_dir`` is ``out_md.parent / "figures"``."""
    groups = group(rows, "tam.depth")
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, module in zip(axes, ("spm", "tam"), strict=True):
        _errorbar(ax, groups, f"iiw.final_iiw_{module}_fisher_group", ESTIMATORS["fisher_group"], log=True)
        ax.set_title(f"{module.upper()}: IIW of the trained model vs chain depth", fontsize=9)
        ax.set_xlabel("chain depth (tam.depth)")
        ax.set_ylabel("IIW (geometric mean ×/÷ std over seeds)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(fig_dir / "depth_iiw.png", dpi=110)
    plt.close(fig)
    figures.append("depth_iiw.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    _errorbar(ax, groups, "dev_wer", "dev")
    _errorbar(ax, groups, "test_wer", "test", fmt="s--")
    ax.set_xlabel("chain depth (tam.depth)")
    ax.set_ylabel("WER % (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(fig_dir / "depth_wer.png", dpi=110)
    plt.close(fig)
    figures.append("depth_wer.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, module in zip(axes, ("spm", "tam"), strict=True):
        curves = epoch_curves(rows, f"iiw_{module}_fisher_group")
        for depth in sorted(curves, key=int):
            epochs = sorted(curves[depth])
            stats = [log_stats(curves[depth][e]) for e in epochs]
            ax.errorbar(epochs, [m for m, _, _, _ in stats], yerr=[[m - lo for m, lo, _, _ in stats],
                                                                    [hi - m for m, _, hi, _ in stats]],
                        capsize=2, marker="o", markersize=3, label=f"depth {depth}")
        ax.set_yscale("log")
        ax.set_title(f"{module.upper()}: IIW per epoch (quick memory, slow forgetting?)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("IIW, paper estimator (geo. mean ×/÷ std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "depth_iiw_epochs.png", dpi=110)
    plt.close(fig)
    figures.append("depth_iiw_epochs.png")

    def pm(members, key, fmt="{:.3g}"):
        m, s, n = mean_std(r.get(key) for r in members)
        return "–" if not n else (fmt + " ± " + fmt).format(m, s)

    lines = ["# Chain-depth study", "",
             f"{len(rows)} DVC experiments (`tam.depth` × `train.seed`), gathered from MLflow and the runs recorded in "
             "`runs.jsonl` next to this file (MLflow's database is not in git; commit both). IIW of the trained "
             "model with θ0 = its initial weights, on a fixed seeded training subset; mean ± sample std over seeds. "
             "Compare each module across depths (absolute values across modules are not comparable).", "",
             "| depth | seeds | IIW SPM (paper) | IIW TAM (paper) | IIW SPM (ref. code) | IIW TAM (ref. code) | "
             "dev WER % | test WER % |", "|---|---|---|---|---|---|---|---|"]
    for depth, members in groups.items():
        lines.append(f"| {depth} | {len(members)} | {pm(members, 'iiw.final_iiw_spm_fisher_group')} | "
                     f"{pm(members, 'iiw.final_iiw_tam_fisher_group')} | {pm(members, 'iiw.final_iiw_spm_official')} | "
                     f"{pm(members, 'iiw.final_iiw_tam_official')} | {pm(members, 'dev_wer', '{:.2f}')} | "
                     f"{pm(members, 'test_wer', '{:.2f}')} |")
    lines += ["", *[f"![{f}](figures/{f})" for f in figures], ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines))
    return out_md
