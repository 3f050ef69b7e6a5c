"""The markdown report of a pipeline run: WER tables as the papers print them, and training curves as PNGs.

It reads only the metrics files the stages declare, so it can be rebuilt without touching a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def wer_table(evaluation: dict) -> list[str]:
    """Rows like the papers' tables: WER with del/ins next to it, plus the exact counts."""
    lines = ["| split | WER % | del % | ins % | sub % | S | D | I | N | utterances |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for split, m in evaluation["splits"].items():
        lines.append(f"| {split} | **{_fmt(m['wer'], 2)}** | {_fmt(m['del'], 2)} | {_fmt(m['ins'], 2)} | "
                     f"{_fmt(m['sub'], 2)} | {m['S']} | {m['D']} | {m['I']} | {m['N']} | {m['utterances']} |")
    return lines


def heads_table(evaluation: dict) -> list[str]:
    """WER of every head of a two-head model (VAC/SMKD: seq and conv; CTCA: global and local)."""
    first = next(iter(evaluation["splits"].values()), {})
    heads = first.get("heads", {})
    if len(heads) < 2:
        return []
    lines = [f"All heads (inference uses **{first.get('head')}**):", "",
             "| split | head | WER % | del % | ins % |", "|---|---|---|---|---|"]
    for split, m in evaluation["splits"].items():
        for head, r in m.get("heads", {}).items():
            lines.append(f"| {split} | {head} | {_fmt(r['wer'], 2)} | {_fmt(r['del'], 2)} | {_fmt(r['ins'], 2)} |")
    return lines + [""]


def plot_curves(history: list[dict], pretrain: list[dict], out: Path) -> list[str]:
    """training_loss.png and dev_wer.png; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        ep = [h["epoch"] for h in history]
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train CTC loss")
        if "dev_loss" in history[0]:
            ax.plot(ep, [h["dev_loss"] for h in history], "s-", label="dev CTC loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("CTC loss per video")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "training_loss.png", dpi=110)
        plt.close(fig)
        written.append("training_loss.png")
    if any("dev_wer" in h for h in history + pretrain):
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        if pretrain:
            ax.plot([h["epoch"] for h in pretrain], [h.get("dev_wer") for h in pretrain], "^--",
                    label="pretrain_spm (shallow TAM)")
        if history:
            ax.plot([h["epoch"] for h in history], [h.get("dev_wer") for h in history], "o-", label="train")
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev WER % (greedy)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "dev_wer.png", dpi=110)
        plt.close(fig)
        written.append("dev_wer.png")
    return written


IIW_GROUPS = ("spm", "tam", "classifier")


def plot_iiw_curves(rows: list[dict], out: Path) -> list[str]:
    """iiw_curves.png: IIW of each module group per epoch, paper (Fisher) and official estimators, log scale."""
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, est, title in ((axes[0], "fisher_group", "paper estimator (Eq. 15, per-sample Fisher)"),
                           (axes[1], "official", "reference-code estimator")):
        for g in IIW_GROUPS:
            pts = [(r["epoch"], r[f"iiw_{g}_{est}"]) for r in rows if r.get(f"iiw_{g}_{est}", 0) > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=g.upper() if g != "classifier" else g)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("IIW")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "iiw_curves.png", dpi=110)
    plt.close(fig)
    return ["iiw_curves.png"]


def iiw_section(iiw: dict) -> list[str]:
    """The report's IIW table (final model) with the estimators' definitions."""
    final = iiw.get("final", {})
    lines = ["## Information in weights (IIW)", "",
             f"Final model, θ0 = the initial weights; {iiw.get('subset')} fixed training videos of "
             f"n = {iiw.get('n_train')} ({iiw.get('skipped', 0)} skipped: infeasible CTC).", "",
             "| module | parameters | IIW (paper, Fisher) | ± s.e. | IIW (reference code) | ‖Δθ‖ | IIW per parameter |",
             "|---|---|---|---|---|---|---|"]
    for g in IIW_GROUPS:
        if g not in final:
            continue
        f, n_par = final[g], iiw.get("parameters", {}).get(g, 0)
        per = f["fisher_group"] / n_par if n_par else None
        lines.append(f"| {g} | {n_par:,} | {f['fisher_group']:.4g} | {f.get('fisher_group_se', 0):.2g} | "
                     f"{f.get('official', 0):.3g} | {f.get('delta_norm', 0):.3g} | {_fmt(per, 6) if per else '–'} |")
    cost = iiw.get("cost_ratio")
    lines += ["", "Paper estimator: n · mean_i (Δθ·∇ℓ_i)² over the subset (Eq. 15 with a per-sample Fisher); "
              "reference-code estimator: the square of the projected mean of 10 mini-batch gradients, per tensor, "
              "over M batches (docs: iiw.md §2.2). Compare within a module across epochs or depths, not across "
              "modules."]
    if cost is not None:
        lines.append(f"One per-epoch IIW evaluation cost {100 * cost:.1f} % of a training epoch.")
    return lines + [""]


def plot_posteriors(example: dict, out: Path) -> str:
    """The CTC "spike" picture: per-step posteriors of blank and of the glosses of one clip."""
    import numpy as np

    probs = np.array(example["probs"])
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    steps = np.arange(probs.shape[1])
    colours = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # no greys
    for i, (row, name) in enumerate(zip(probs, example["classes"], strict=True)):
        style = {"color": "0.5", "linestyle": "--"} if name == "<blank>" else {"color": colours[(i - 1) % 18]}
        # matplotlib hides legend labels that start with "_" (PHOENIX's __ON__/__OFF__)
        ax.plot(steps, row, label=f" {name}" if name.startswith("_") else name, linewidth=1.5, **style)
    ax.plot(steps, example["other"], color="0.85", linewidth=1, label="other glosses")
    ax.set_xlabel(f"output step ({example.get('frames_per_step', 4)} frames each)")
    ax.set_ylabel("posterior")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{example['id']}\nREF: {' '.join(example['ref'])}\nHYP: {' '.join(example['hyp'])}",
                 fontsize=8, loc="left")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "ctc_posteriors.png", dpi=110)
    plt.close(fig)
    return "ctc_posteriors.png"


def build_report(metrics_dir: Path, reports_dir: Path, params: dict, eval_dir: Path | None = None,
                 methods: list[dict] | None = None) -> Path:
    """reports/report.md and its figures. ``methods``: finished DVC experiments (``ctca.compare.collect``)
    for the per-method table."""

    def load(name: str, default=None):
        p = metrics_dir / name
        return json.loads(p.read_text()) if p.is_file() else default

    evaluation = load("eval.json")
    train = load("train.json", {})
    history = load("train_history.json", [])
    pretrain = load("pretrain_spm.json", {})
    frames = load("extract_frames.json", {})
    cache = load("cache_features.json", {})
    if evaluation is None:
        raise FileNotFoundError(f"{metrics_dir / 'eval.json'}: missing (run the evaluate stage first)")
    iiw = load("iiw.json")
    figures = plot_curves(history, pretrain.get("history", []), reports_dir / "figures")
    if iiw is not None:
        figures += plot_iiw_curves(load("iiw_curves.json", []), reports_dir / "figures")
    example = eval_dir / "posterior_example.json" if eval_dir else None
    if example is not None and example.is_file():
        figures.append(plot_posteriors(json.loads(example.read_text()), reports_dir / "figures"))

    d = params["data"]
    lines = [
        "# CTCA pipeline report",
        "",
        f"Dataset **{d['dataset']}**, method **{evaluation['method']}**, chain depth **{evaluation['depth']}**, "
        f"decoder {evaluation['decoder']} (beam {evaluation['beam_width']}), scoring protocol "
        f"**{evaluation['protocol']}**. DVC experiment: `{os.environ.get('DVC_EXP_NAME') or '(dvc repro)'}`.",
        "",
        f"## Word error rate (protocol: {evaluation['protocol']})",
        "",
        *wer_table(evaluation),
        "",
        "WER = (S + D + I) / N over the whole split, scored as the official sclite pipeline scores it "
        f"(protocol `{evaluation['protocol']}`: its normalisation rules, `[EMPTY]` for an empty hypothesis, "
        "sclite's alignment with substitution 4, deletion 3, insertion 3); del % and ins % as in the papers' "
        "tables. References keep out-of-vocabulary glosses. `work/eval/<split>.ctm` and `.stm` let the "
        "official scripts (or `ctca score`) reproduce these numbers.",
        "",
        *heads_table(evaluation),
    ]
    if train:
        groups = train.get("parameters_by_module", {})
        ms = " / ".join(f"{s} {_fmt(m.get('ms_per_video'), 1)} ms" for s, m in evaluation["splits"].items())
        lines += [
            "## Model",
            "",
            "| method | chain depth | parameters (inference) | SPM | TAM | classifier | training-only | best epoch "
            "| inference per video |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {train['method']} | {train['depth'] if train['method'] != 'ctca' else '– (dual path)'} | "
            f"{train['parameters']:,} | {groups.get('spm', 0):,} | {groups.get('tam', 0):,} | "
            f"{groups.get('classifier', 0):,} | {sum(train.get('parameters_training_only', {}).values()):,} | "
            f"{train['best_epoch']} of {train['epochs']} | {ms} |",
            "",
            "Training-only parameters (auxiliary heads, the other CTCA path, projection heads, decoders) are "
            "not used at inference. Compare methods across experiments with `ctca compare` (reports/methods.md).",
            "",
        ]
    if methods:
        from ctca.compare import markdown_table

        lines += ["## Methods compared", "",
                  f"The {len(methods)} finished DVC experiments in MLflow at `tam.depth` "
                  f"{methods[0].get('tam.depth')} when this report was built, grouped by method (mean ± std over their seeds and other settings; `ctca compare --by <param>` for other "
                  "groupings and the per-experiment list). Inference ms per video is measured by each run's "
                  "evaluate stage, so it depends on the load of the machine at that time.", "",
                  *markdown_table(methods, "model.method"), ""]
    if iiw is not None:
        lines += iiw_section(iiw)
    if figures:
        lines += ["## Training curves, IIW curves and CTC posteriors", ""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    lines += ["## Data", ""]
    counts = frames.get("counts", {})
    oov = cache.get("oov", {})
    if counts:
        lines += ["| split | videos | unreadable (skipped) | OOV reference tokens |", "|---|---|---|---|"]
        for split, c in counts.items():
            n_oov = evaluation["splits"].get(split, {}).get("oov_tokens", oov.get(split, {}).get("glosses", "–"))
            lines.append(f"| {split} | {c.get('ok', 0)} | {c.get('failed', 0)} | {n_oov} |")
        lines.append("")
    failed = frames.get("failed", [])
    if failed:
        lines += ["Unreadable inputs (skipped; listed in `work/frames/manifest.json`):", ""]
        lines += [f"- `{f['id']}` ({f['split']}): {f['reason']}" for f in failed[:20]]
        lines.append("")
    excluded = train.get("excluded_train_samples", [])
    lines += [f"Training clips excluded as infeasible for CTC: {len(excluded)}."]
    lines += [f"- `{e['id']}`: {e['reason']}" for e in excluded[:20]]
    lines.append("")
    lines += ["## WER per signer", "", "| split | signer | WER % | del % | ins % | N |", "|---|---|---|---|---|---|"]
    per_signer_file = eval_dir / "per_signer.json" if eval_dir else None
    per_signer = json.loads(per_signer_file.read_text()) if per_signer_file and per_signer_file.is_file() else {}
    for split, signers in per_signer.items():
        for signer, r in signers.items():
            lines.append(f"| {split} | {signer} | {_fmt(r['wer'], 2)} | {_fmt(r['del'], 2)} | {_fmt(r['ins'], 2)} "
                         f"| {r['N']} |")
    lines.append("")
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / "report.md"
    out.write_text("\n".join(lines))
    return out
