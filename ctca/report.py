"""The markdown report of a pipeline run: WER tables as the papers print them, and training/IIW curves as PNGs.

It reads only files the stages declare as outputs (the paths in ``ctca.pipeline``): the flat DVC metrics,
the per-epoch plots files and the detail next to them (work/eval/summary.json, work/train/summary.json,
work/iiw/detail.json, work/stages/*.json), so it can be rebuilt without touching a model. The report stage
is the only writer of reports/report.md and reports/figures/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ctca.environment import differences, fingerprint  # noqa: E402
from ctca.pipeline import (  # noqa: E402
    CACHE_FEATURES_SUMMARY,
    EVAL_DIR,
    EVAL_SUMMARY,
    EXTRACT_FRAMES_SUMMARY,
    FIGURES_DIR,
    IIW_CURVES,
    IIW_DETAIL,
    IIW_METRICS,
    PRETRAIN_SPM_SUMMARY,
    REPORT_FILE,
    SYNTHESIZE_SUMMARY,
    TRAIN_HISTORY,
    TRAIN_METRICS,
    TRAIN_SUMMARY,
)


def _fmt(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def unreadable_lines(evaluation: dict) -> list[str]:
    """The evaluation videos that could not be read: each is scored (an empty hypothesis, so every gloss
    of its reference is an error) and listed, so the WER covers the whole official set."""
    lines = []
    for split, m in evaluation["splits"].items():
        unreadable = m.get("unreadable", [])
        if unreadable:
            lines += [f"{split}: {len(unreadable)} of {m['utterances']} utterances had an unreadable video and are "
                      "scored as empty hypotheses (every gloss of their references counts as an error):", ""]
            lines += [f"- `{u['id']}`: {u['reason']}" for u in unreadable] + [""]
    return lines


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


IIW_ESTIMATORS = ("fisher_group", "official")


def curve_groups(rows: list[dict]) -> list[str]:
    """The module groups of IIW curve rows (``iiw_<group>_<estimator>`` keys), in the order the iiw stage wrote them."""
    groups: dict[str, None] = {}
    for r in rows:
        for k in r:
            for est in IIW_ESTIMATORS:
                if k.startswith("iiw_") and k.endswith(f"_{est}"):
                    groups[k[len("iiw_"):-len(est) - 1]] = None
    return list(groups)


def plot_iiw_curves(rows: list[dict], out: Path) -> list[str]:
    """iiw_curves.png: IIW of each module group per epoch, paper (Fisher) and official estimators, log scale."""
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, est, title in ((axes[0], "fisher_group", "paper estimator (Eq. 15, per-sample Fisher)"),
                           (axes[1], "official", "reference-code estimator")):
        for g in curve_groups(rows):
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
    prior = {"init": "θ0 = the initial weights",
             "heldout": "θ0 = the initial weights trained on the held-out dev clips (`iiw.prior: heldout`)"}.get(
        iiw.get("prior"), "θ0 as `iiw.prior` sets it")
    lines = ["## Information in weights (IIW)", "",
             f"Final model, {prior}; {iiw.get('subset')} fixed training videos of "
             f"n = {iiw.get('n_train')} ({iiw.get('skipped', 0)} skipped: infeasible CTC).", "",
             "| module | parameters | IIW (paper, Fisher) | ± s.e. | IIW (reference code) | ‖Δθ‖ | IIW per parameter |",
             "|---|---|---|---|---|---|---|"]
    for g in final:  # the iiw stage writes the groups in the order to show (ctca.iiw.IIW_GROUPS)
        f, n_par = final[g], iiw.get("parameters", {}).get(g, 0)
        per = f["fisher_group"] / n_par if n_par else None
        lines.append(f"| {g} | {n_par:,} | {f['fisher_group']:.4g} | {f.get('fisher_group_se', 0):.2g} | "
                     f"{f.get('official', 0):.3g} | {f.get('delta_norm', 0):.3g} | {_fmt(per, 6) if per else '–'} |")
    cost = iiw.get("cost_ratio")
    lines += ["", "Paper estimator: n · mean_i (Δθ·∇ℓ_i)² over the subset (Eq. 15 with a per-sample Fisher); "
              "reference-code estimator: the square of the projected mean of 10 mini-batch gradients, per tensor, "
              "over M batches (docs/iiw.md#estimators). Compare within a module across epochs or depths, not across "
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


def methods_section(methods: list[dict] | None, depth, note: str | None = None) -> list[str]:
    """The "Methods compared" section; says why when there is nothing to compare (never just disappears).

    ``methods``: the finished DVC experiments at this chain depth (``ctca.compare.collect``); ``note``: why
    they could not be read (e.g. the MLflow store is unreadable), shown instead of the table.
    """
    lines = ["## Methods compared", ""]
    if note:
        return lines + [f"**Not available:** {note}", ""]
    if not methods:
        return lines + [f"No finished DVC experiment at `tam.depth` {depth} in MLflow yet (a plain `dvc repro` "
                        "is not an experiment: `dvc exp run -S model.method=vac`, then `ctca compare`).", ""]
    from ctca.compare import markdown_table

    return lines + [f"The {len(methods)} finished DVC experiments in MLflow at `tam.depth` {depth} when this "
                    "report was built, grouped by method (mean ± std over their seeds and other settings; "
                    "`ctca compare --by <param>` for other groupings and the per-experiment list). Inference ms "
                    "per video is measured by each run's evaluate stage, so it depends on the load of the machine "
                    "at that time.", "", *markdown_table(methods, "model.method"), ""]


def model_table(train: dict, evaluation: dict) -> list[str]:
    """Method, depth, parameters (inference, per module, training-only), best epoch, time per epoch and video."""
    groups = train.get("parameters_by_module", {})
    ms = " / ".join(f"{s} {_fmt(m.get('ms_per_video'), 1)} ms" for s, m in evaluation["splits"].items())
    method = train.get("method", evaluation.get("method"))
    depth = train.get("depth", evaluation.get("depth")) if method != "ctca" else "– (dual path)"
    params = train.get("parameters")
    training_only = train.get("parameters_training_only")
    return [
        "## Model",
        "",
        "| method | chain depth | parameters (inference) | SPM | TAM | classifier | training-only | best epoch "
        "| training s / epoch | inference per video |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {method} | {depth} | {_int(params)} | {_int(groups.get('spm'))} | {_int(groups.get('tam'))} | "
        f"{_int(groups.get('classifier'))} | "
        f"{_int(sum(training_only.values())) if training_only is not None else '–'} | "
        f"{train.get('best_epoch', '–')} of {train.get('epochs', '–')} | {_fmt(train.get('epoch_seconds'), 2)} | "
        f"{ms} |",
        "",
        "Training-only parameters (auxiliary heads, the other CTCA path, projection heads, decoders) are "
        "not used at inference. Compare methods across experiments with `ctca compare`.",
        "",
    ]


def _int(x) -> str:
    return "–" if x is None else f"{x:,}"


def environment_section(here: dict, training: dict | None = None) -> list[str]:
    """The "Environment" section: the fingerprint (ctca.environment) of the machine that wrote the report, and
    next to it the train stage's (``work/train/summary.json``) when that differs, the differing keys in bold."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["## Environment", ""]
    diff = differences(here, training) if training else []
    if not diff:
        lines += ["The machine and software that wrote this report"
                  + (" (the train stage ran in the same environment):" if training else ":"), "",
                  "| key | value |", "|---|---|"]
        lines += [f"| {k} | {cell(v)} |" for k, v in here.items()]
        return lines + [""]
    lines += [f"The train stage ran in a different environment from the one that wrote this report: "
              f"{', '.join(f'`{k}`' for k in diff)} differ (in bold).", "",
              "| key | this report | training |", "|---|---|---|"]
    for k in dict.fromkeys((*here, *training)):
        a, b = cell(here.get(k, "–")), cell(training.get(k, "–"))
        lines.append(f"| **{k}** | **{a}** | **{b}** |" if k in diff else f"| {k} | {a} | {b} |")
    return lines + [""]


def build_report(root: Path | str, params: dict, methods: list[dict] | None = None,
                 methods_note: str | None = None, environment: dict | None = None) -> Path:
    """reports/report.md and reports/figures/*.png of the pipeline outputs under ``root`` (the project folder).

    ``params``: the params as a dict; ``methods``/``methods_note``: see :func:`methods_section`;
    ``environment``: the fingerprint for the "Environment" section (default: this process's,
    ctca.environment.fingerprint). Raises FileNotFoundError without the evaluation summary; any other missing
    input is named in the report.
    """
    root = Path(root)
    missing: list[Path] = []

    def load(rel: Path, default=None):
        p = root / rel
        if p.is_file():
            return json.loads(p.read_text())
        missing.append(rel)
        return default

    evaluation = load(EVAL_SUMMARY)
    if evaluation is None:
        raise FileNotFoundError(f"{root / EVAL_SUMMARY}: missing (run the evaluate stage first)")
    train = {**load(TRAIN_METRICS, {}), **load(TRAIN_SUMMARY, {})}
    history = load(TRAIN_HISTORY, [])
    pretrain = load(PRETRAIN_SPM_SUMMARY, {})
    synth = load(SYNTHESIZE_SUMMARY, {})
    frames = load(EXTRACT_FRAMES_SUMMARY, {})
    cache = load(CACHE_FEATURES_SUMMARY, {})
    iiw_headline = load(IIW_METRICS, {})
    iiw = load(IIW_DETAIL)
    curves = load(IIW_CURVES, [])
    per_signer = load(EVAL_DIR / "per_signer.json", {})
    example = load(EVAL_DIR / "posterior_example.json")

    fig_dir = root / FIGURES_DIR
    figures = plot_curves(history, pretrain.get("history", []), fig_dir)
    figures += plot_iiw_curves(curves, fig_dir)
    if example is not None:
        figures.append(plot_posteriors(example, fig_dir))

    d = params["data"]
    lines = [
        "# CTCA pipeline report",
        "",
        f"Dataset **{d['dataset']}**, method **{evaluation['method']}**, chain depth **{evaluation['depth']}**, "
        f"decoder {evaluation['decoder']} (beam {evaluation['beam_width']}), scoring protocol "
        f"**{evaluation['protocol']}**. DVC experiment: `{os.environ.get('DVC_EXP_NAME') or '(dvc repro)'}`.",
        "",
    ]
    if missing:
        lines += ["Inputs not found (their sections are left out or incomplete): "
                  + ", ".join(f"`{m.as_posix()}`" for m in missing) + ".", ""]
    lines += [
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
        *unreadable_lines(evaluation),
        *heads_table(evaluation),
    ]
    if train:
        lines += model_table(train, evaluation)
    lines += methods_section(methods, params.get("tam", {}).get("depth"), methods_note)
    if iiw is not None:
        lines += iiw_section(iiw)
    elif iiw_headline:
        lines += ["## Information in weights (IIW)", "",
                  "Final model, paper estimator: " + ", ".join(f"{k} {v:.4g}" for k, v in iiw_headline.items()
                                                              if isinstance(v, int | float)) + ".", ""]
    if figures:
        lines += ["## Training curves, IIW curves and CTC posteriors", ""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    lines += ["## Data", ""]
    if synth.get("sentences"):
        lines += [f"SynthSign corpus: {synth['sentences']} sentences, {synth.get('vocab_size')} glosses, "
                  f"{synth.get('frames')} frames ({synth.get('mean_frames')} per video), "
                  f"{synth.get('minimal_pairs')} minimal pairs of signs.", ""]
    counts = frames.get("counts", {})
    oov = cache.get("oov", {})
    if counts:
        lines += ["| split | videos | unreadable | OOV reference tokens |", "|---|---|---|---|"]
        for split, c in counts.items():
            n_oov = evaluation["splits"].get(split, {}).get("oov_tokens", oov.get(split, {}).get("glosses", "–"))
            lines.append(f"| {split} | {c.get('ok', 0)} | {c.get('failed', 0)} | {n_oov} |")
        lines.append("")
    if cache.get("vocab_size") is not None:
        lines += [f"Gloss vocabulary (training split only): {cache['vocab_size']} glosses.", ""]
    failed = frames.get("failed", [])
    if failed:
        lines += ["Unreadable inputs (not trained on; a dev/test one is scored as an empty hypothesis; listed in "
                  "`work/frames/manifest.json`):", ""]
        lines += [f"- `{f['id']}` ({f['split']}): {f['reason']}" for f in failed[:20]]
        lines.append("")
    excluded = train.get("excluded_train_samples", [])
    lines += [f"Training clips excluded as infeasible for CTC: {len(excluded)}."]
    lines += [f"- `{e['id']}`: {e['reason']}" for e in excluded[:20]]
    lines.append("")
    lines += ["## WER per signer", "", "| split | signer | WER % | del % | ins % | N |", "|---|---|---|---|---|---|"]
    for split, signers in per_signer.items():
        for signer, r in signers.items():
            lines.append(f"| {split} | {signer} | {_fmt(r['wer'], 2)} | {_fmt(r['del'], 2)} | {_fmt(r['ins'], 2)} "
                         f"| {r['N']} |")
    lines.append("")
    lines += environment_section(environment if environment is not None else fingerprint(),
                                 train.get("environment"))
    out = root / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
