"""Stage synthesize: render the SynthSign corpus (PHOENIX-2014 layout) when data.dataset=synthetic."""

from __future__ import annotations

import shutil

from ctca.config import Params
from ctca.pipeline import SYNTH_ROOT, SYNTHESIZE_SUMMARY, stage_main, write_json


def run(params: Params) -> None:
    if params.data.dataset != "synthetic":
        # the stage's output must exist for DVC; a real corpus is read from data.root instead
        shutil.rmtree(SYNTH_ROOT, ignore_errors=True)
        SYNTH_ROOT.mkdir(parents=True)
        (SYNTH_ROOT / "NOT_USED.md").write_text(f"data.dataset={params.data.dataset}: corpus read from "
                                                f"{params.data.root}\n")
        write_json(SYNTHESIZE_SUMMARY, {"dataset": params.data.dataset, "rendered": False})
        return
    from ctca.data.synthetic import generate
    from ctca.tracking import stage_run

    with stage_run("synthesize", {"synth": params.section("synth")}, params.tracking.experiment) as run:
        summary = generate(params.synth.generator_config(), SYNTH_ROOT, workers=params.synth.workers)
        keys = ("vocab_size", "sentences", "frames", "mean_frames", "minimal_pairs")  # the full summary is
        write_json(SYNTHESIZE_SUMMARY, {k: summary[k] for k in keys})  # in synthsign.json
        run.log_artifact(SYNTH_ROOT / "synthsign.json")
        run.log_artifact(SYNTHESIZE_SUMMARY)


if __name__ == "__main__":
    stage_main("synthesize", run)
