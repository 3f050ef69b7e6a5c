"""Paper-shape training steps (ResNet-18, batch 2 x ~200 frames x 224 px) through ``fit``, killed and resumed.

Proves the paper-scale path on any machine, a CPU included: the clip store of ``cache_features`` at
``frames.size: 256`` (e.g. JPEG shards with ``frames.store: encoded``), ``spm.arch: resnet18``, the VAC
recipe's TAM (``tam.depth: 4``, 1024 hidden units), 224-px crops, batches of 2, temporal rescale and flip.
One epoch over the first ``2 * --steps`` training clips, with a step checkpoint every
``--checkpoint-steps`` steps (``train.checkpoint_steps``):

1. a child process trains and is killed with SIGKILL once a step checkpoint covers ``--kill-after`` steps;
2. ``fit`` runs again on the same checkpoint folder, resumes within the epoch and finishes it.

Prints seconds per step (from the resumed part) and frames per second, and where the run resumed.

    python benchmarks/paper_shape_train.py --clips /path/to/work/clips --steps 12 --checkpoint-steps 4 --kill-after 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ctca.checkpoint import load_checkpoint  # noqa: E402
from ctca.config import parse_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def paper_params(steps: int, checkpoint_steps: int, method: str) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["frames"]["size"] = 256
    params["loader"].update(crop=224, batch_size=2, flip=0.5, temporal_rescale=0.2, max_frames=230, num_workers=1)
    params["spm"].update(arch="resnet18", pretrained="")
    params["tam"].update(depth=4, hidden=1024)
    params["model"]["method"] = method
    params["ctca"]["downsample"] = "none"
    params["train"].update(epochs=1, milestones=[1], lr=1.0e-4, checkpoint_steps=checkpoint_steps, amp="off")
    params["evaluate"]["batch_size"] = 1
    return params


def subset_store(clips: Path, out: Path, n_train: int, n_dev: int) -> Path:
    """A clip store index over the first clips of ``clips`` (same frames: an encoded store's frame shards
    or a raw store's files are referenced, not copied)."""
    index = json.loads((clips / "index.json").read_text())
    for split, n in (("train", n_train), ("dev", n_dev)):
        entry = index["splits"][split]
        entry["samples"] = entry["samples"][:n]
        if entry.get("store", "raw") == "encoded":
            entry["frames_dir"] = str((clips / entry["frames_dir"]).resolve())
        else:
            entry["file"] = str((clips / entry["file"]).resolve())
    index["splits"] = {k: v for k, v in index["splits"].items() if k in ("train", "dev")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(index))
    (out / "vocab.json").write_text((clips / "vocab.json").read_text())
    return out


def child(params_file: str, clips: str, ckpt: str) -> None:
    from ctca.train import fit

    fit(parse_params(yaml.safe_load(Path(params_file).read_text())), Path(clips), Path(ckpt), progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, required=True, help="a clip store at 256 px (work/clips)")
    ap.add_argument("--steps", type=int, default=12, help="steps of the epoch (2 clips each)")
    ap.add_argument("--checkpoint-steps", type=int, default=4)
    ap.add_argument("--kill-after", type=int, default=4, help="kill once a checkpoint covers this many steps")
    ap.add_argument("--method", default="baseline")
    ap.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if not 0 < args.kill_after < args.steps or args.kill_after % args.checkpoint_steps:
        ap.error("--kill-after must be a multiple of --checkpoint-steps below --steps")

    with tempfile.TemporaryDirectory(prefix="ctca-paper-shape-") as tmp_name:
        work = args.out or Path(tmp_name)
        clips = subset_store(args.clips.resolve(), work / "clips", 2 * args.steps, 2)
        params = paper_params(args.steps, args.checkpoint_steps, args.method)
        parse_params(params)  # validated before anything starts
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump(params))
        ckpt = work / "ckpt"
        last = ckpt / "last.pt"

        code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); from paper_shape_train import child; "
                f"child({str(params_file)!r}, {str(clips)!r}, {str(ckpt)!r})")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
        covered = 0
        while proc.poll() is None:
            time.sleep(2)
            if last.is_file():
                try:
                    covered = load_checkpoint(last).get("partial", {}).get("step", 0)
                except Exception:  # noqa: BLE001 - being replaced right now; look again
                    continue
                if covered >= args.kill_after:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
        before = time.perf_counter() - t0
        if covered < args.kill_after:
            print(f"the child ended (exit {proc.returncode}) before a checkpoint covered {args.kill_after} steps")
            return 1
        print(f"killed (SIGKILL) after {before:.0f} s, with a step checkpoint covering {covered} of "
              f"{args.steps} steps of epoch 1")

        from ctca.train import fit

        t1 = time.perf_counter()
        result = fit(parse_params(params), clips, ckpt, progress=False)
        after = time.perf_counter() - t1
        (epoch,) = result.history
        rest = args.steps - covered
        print(f"resumed within epoch 1 at step {covered + 1}; {rest} more steps, then dev evaluation: {after:.0f} s")
        print(f"paper shape ({args.method}, ResNet-18, batch 2, 224 px, depth-4 TAM with 1024 hidden): "
              f"{epoch['epoch_seconds'] / args.steps:.1f} s per step over the epoch "
              f"(killed + resumed parts), {epoch['train_frames_per_second']:.1f} training frames/s, "
              f"train loss {epoch['train_loss']:.2f}, torch threads {epoch.get('torch_threads')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
