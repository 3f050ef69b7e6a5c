"""Shared fixtures: a tiny SynthSign corpus pushed through extraction and the clip cache, built once."""

from pathlib import Path

import pytest

from ctca.config import parse_params

TINY_SYNTH = {"seed": 3, "vocab_size": 6, "n_train": 16, "n_dev": 4, "n_test": 4, "n_signers": 3,
              "held_out_signers": 1, "min_len": 2, "max_len": 4, "workers": 1}

TINY_PARAMS = {
    "synth": TINY_SYNTH,
    "frames": {"size": 24, "workers": 1},
    "loader": {"crop": 20, "batch_size": 4, "min_frames": 8},
    "spm": {"channels": [4, 8], "pretrain_epochs": 1},
    "tam": {"depth": 3, "hidden": 16, "dropout": 0.1},
    "train": {"epochs": 3, "milestones": [2], "lr": 0.003, "threads": 1},
    "evaluate": {"batch_size": 8},
}


@pytest.fixture(scope="session")
def tiny_params():
    return parse_params(TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory) -> Path:
    """work/clips of a tiny SynthSign corpus, built with the same library calls as the stages."""
    from ctca.data.cache import write_clip_store
    from ctca.data.corpus import SPLITS, SynthSignReader
    from ctca.data.frames import extract_frames
    from ctca.data.synthetic import SynthConfig, generate
    from ctca.data.vocab import Vocabulary

    base = tmp_path_factory.mktemp("tiny")
    synth = dict(TINY_SYNTH)
    workers = synth.pop("workers")
    generate(SynthConfig(**synth), base / "corpus", workers=workers, progress=False)
    reader = SynthSignReader(base / "corpus")
    samples = [s for split in SPLITS for s in reader.samples(split)]
    extract_frames(samples, base / "frames", size=TINY_PARAMS["frames"]["size"], workers=1, progress=False)
    vocab = Vocabulary.build([s.glosses for s in samples if s.split == "train"])
    write_clip_store(base / "frames", base / "clips", vocab, progress=False)
    return base / "clips"


def stall_in_epoch_2(marker: str) -> None:
    """In a child process: make training say (by touching ``marker``) that it reached epoch 2, then hang."""
    import time

    import ctca.data.loader as loader

    original = loader.ClipDataset.__getitem__

    def stall(self, i):
        if self.epoch >= 1:  # mid-epoch 2: say so, then wait to be killed
            Path(marker).touch()
            time.sleep(600)
        return original(self, i)

    loader.ClipDataset.__getitem__ = stall


def kill_in_epoch_2(code: str, marker: Path, cwd: Path | None = None) -> int:
    """Run ``python -c code`` (which calls :func:`stall_in_epoch_2`), SIGKILL it once ``marker`` appears;
    returns its PID."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", code], cwd=cwd)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert child.poll() is None, "training ended before reaching epoch 2"
            assert time.time() < deadline, "epoch 2 not reached after 300 s"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return child.pid
