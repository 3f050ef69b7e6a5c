"""SynthSign: a synthetic sign-language corpus (drawn signer, gloss signs, bigram sentences) rendered from a seed.

It is written in the PHOENIX-2014 layout, so the pipeline can be developed, tested and studied without the real data:
one mp4 per sentence by default, or (``layout="png"``) the release's own PNG frame folders. Its sentences can also be
those of a real corpus (``from_corpus``), keeping the official train/dev/test split when given the split files.

What is byte-stable (measured; README "Reproducibility", docs/data-formats.md "SynthSign"): the rendered frames
(:func:`render_frames`, before encoding), the corpus CSVs and ``synthsign.json`` except ``video.encoder`` are a
function of the config alone, the same under every OpenCV and numpy build measured. The mp4 files are not: the
encoder of OpenCV's bundled FFmpeg differs between builds, so the frames decoded from them differ slightly too.
``synthsign.json`` records the sha256 of each sample's rendered frames (``rendered_sha256``) and the encoder
build (``video.encoder``), so two corpora can be compared without their videos.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ctca.data.corpus import PHOENIX_FEATURES, PHOENIX_HEADER, SPLITS, read_pipe_table

FORMAT_VERSION = 1
METADATA = "synthsign.json"
FOURCC = "mp4v"
REST_GLOSSES = ("__ON__", "__OFF__")
SPLIT_MODES = ("multisigner", "signer_independent")
LAYOUTS = ("mp4", "png")
ALL = -1  # n_train/n_dev/n_test: every sentence of the split's file (from_corpus naming a folder of split files)
MAX_SENTENCES = 10**6
# Frame file of the PHOENIX-2014 release (phoenix-2014-multisigner): <video>.avi_pid0_fn<frame, 0-based>-0.png,
# where <video> is the sample id less its "_default-<n>" segment suffix
PHOENIX_FRAME_NAME = "{video}.avi_pid0_fn{frame:06d}-0.png"
# split files in a from_corpus folder: *-train.stm, train.stm, train.corpus.csv, PHOENIX-2014-T.train.corpus.csv, ...
SPLIT_FILE = r"(?:.*[-_.])?{split}\.(?:stm|corpus\.csv)"
ATTRIBUTES = ("handshape", "location", "movement")

HANDSHAPES = ("fist", "flat", "spread", "point", "v", "l", "y", "claw", "c")
LOCATIONS = ("forehead", "temple", "chin", "chest", "contra_shoulder", "side", "neutral", "stomach")
MOVEMENTS = ("static", "up", "down", "side_to_side", "circle", "arc", "zigzag", "toward", "away", "twist")
N_TRIPLES = len(HANDSHAPES) * len(LOCATIONS) * len(MOVEMENTS)

# Nominal geometry, in pixels of a 210x260 frame for a signer of scale 1. The signer faces the camera,
# so the dominant (right) hand appears on the image's left. Everything is drawn inside the central
# ~80 % of the frame because the pipeline center/random-crops 32 of ~40 pixels.
NOMINAL_W, NOMINAL_H = 210.0, 260.0
MID_X = 105.0
HEAD_XY, HEAD_AXES = (105.0, 62.0), (24.0, 30.0)
SHOULDER_Y, SHOULDER_HALF = 124.0, 50.0
UPPER_ARM, FOREARM = 60.0, 60.0
LOCATION_XY = {
    "forehead": (105.0, 52.0),
    "temple": (60.0, 66.0),
    "chin": (105.0, 102.0),
    "chest": (105.0, 142.0),
    "contra_shoulder": (150.0, 124.0),
    "side": (50.0, 134.0),
    "neutral": (70.0, 174.0),
    "stomach": (105.0, 190.0),
}
LOCATION_ANGLE = {"temple": 15.0, "contra_shoulder": -35.0, "side": 20.0, "neutral": 10.0}
REST_DOMINANT = (60.0, 214.0)
MOVEMENT_AMPLITUDE = 15.0  # px at movement_scale 1: a path spans ~30 px, i.e. ~5 px after the 40x40 resize
REST_SHAPE, REST_ANGLE, REST_SCALE = HANDSHAPES.index("flat"), 180.0, 0.85

# A few PHOENIX-like (German weather-forecast) gloss names; beyond them names get a numeric suffix.
GLOSS_NAMES = (
    "REGEN", "SONNE", "WOLKE", "SCHNEE", "WIND", "NEBEL", "GEWITTER", "FROST", "WARM", "KALT", "HEUTE",
    "MORGEN", "ABEND", "NACHT", "TAG", "WOCHE", "NORD", "SUED", "OST", "WEST", "KUESTE", "BERG", "MEHR",
    "WENIG", "STARK", "SCHWACH", "GRAD", "TEMPERATUR", "MINUS", "PLUS", "STEIGEN", "SINKEN", "KOMMEN",
    "BLEIBEN", "WECHSELHAFT", "FREUNDLICH", "LIEB", "ZUSCHAUER", "GUT", "AUCH", "DANN", "JETZT", "MONTAG",
    "DIENSTAG", "MITTWOCH", "DONNERSTAG", "FREITAG", "SAMSTAG", "SONNTAG", "HOCH", "TIEF", "DRUCK", "LUFT",
    "GEBIET", "REGION", "DEUTSCHLAND", "ALPEN", "MEER", "FLUSS", "SCHAUER", "GLATT", "HAGEL", "KLAR", "MILD",
)


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the SynthSign generator; invalid values raise ``ValueError`` naming the field.

    Corpus size and splits:
      seed: all randomness derives from it (non-negative int).
      vocab_size: number of glosses V (excluding ``__ON__``/``__OFF__``), 2..720 (distinct
        handshape x location x movement triples). Ignored with ``from_corpus``.
      n_train / n_dev / n_test: sentences per split (train >= 1, dev/test >= 0). With from_corpus naming a
        folder of split files they are caps: the first n sentences of that split's file, in file order,
        and -1 (ALL) takes all of them.
      n_signers: signers Signer01..SignerNN (1..99); held_out_signers of them never appear in train.
      split_mode: "multisigner": dev/test use all signers (seen and held out, so per-signer WER shows
        seen vs unseen); "signer_independent": dev/test use only the held-out signers (needs >= 1).
    Sentences:
      min_len / max_len: glosses per sentence, excluding rest poses (uniform length).
      rest_prob: probability of a leading ``__ON__`` and, independently, a trailing ``__OFF__``.
      successors: likely successors per gloss in the bigram grammar (sparsity of the language prior;
        at most vocab_size - 1 are used).
      grammar_noise: probability that the next gloss ignores the grammar (uniform over the others).
      from_corpus: a PHOENIX-2014 corpus CSV, a PHOENIX-2014-T CSV or an STM file; its sentences (real
        vocabulary, lengths and rest tokens) are rendered instead of the grammar's; vocab_size,
        min/max_len, rest_prob, successors and grammar_noise are then unused. One file: its sentences are
        pooled and dealt to the splits at random (n_train/n_dev/n_test of them). A folder: it must hold one
        file per split (see :func:`find_split_files`: ``*-train.stm``, ``train.corpus.csv``, ...; or a corpus
        root whose ``annotations/manual/`` holds them), and each split renders its own file's sentences in
        file order under the file's sample ids, so the official split is kept.
    Signs:
      minimal_pair_frac: fraction of the vocabulary built as explicit minimal pairs (two glosses that
        differ in exactly one of handshape/location/movement).
      two_handed_prob: probability that a sign is two-handed (the non-dominant hand mirrors it).
      hand_size: hand sprite size in px at 210x260 (~ sprite width); bigger = easier at low resolution.
      movement_scale: movement path amplitude multiplier (1 = ~30 px path).
    Video and difficulty:
      width / height / fps: frame size (even numbers; PHOENIX: 210 x 260 at 25 fps).
      sign_frames: nominal frames per sign at tempo 1; transition_frames: nominal co-articulation frames.
      tempo_min / tempo_max: per-sentence tempo range (frames scale with 1/tempo).
      duration_jitter: each sign/transition lasts nominal * U(1 - j, 1 + j) frames.
      jitter: per-frame hand position noise (px std at 210x260).
      blur: per-video Gaussian blur sigma drawn from U(0, blur) px (applied when >= 0.3).
      noise: Gaussian noise std as a fraction of 255, drawn on a NOISE_CELL-px grid (see render_frames).
      texture: background texture amplitude as a fraction of 255.
      signer_variation: scale of the between-signer variation of body size and position (0 = identical
        bodies; colours still vary).
    Output:
      layout: "mp4": one mp4v video per sentence (compact, lossy); "png": the PHOENIX-2014 release layout,
        a folder of lossless PNG frames per sentence (``<id>/1/<video>.avi_pid0_fn000000-0.png``), whose
        decoded frames equal the rendered ones (about 14x the disk of mp4).
    """

    seed: int = 0
    vocab_size: int = 40
    n_train: int = 600
    n_dev: int = 100
    n_test: int = 100
    n_signers: int = 8
    held_out_signers: int = 2
    split_mode: str = "multisigner"
    min_len: int = 3
    max_len: int = 12
    rest_prob: float = 0.5
    width: int = 210
    height: int = 260
    fps: int = 25
    sign_frames: int = 8
    transition_frames: int = 3
    noise: float = 0.04
    from_corpus: str = ""
    successors: int = 3
    grammar_noise: float = 0.1
    minimal_pair_frac: float = 0.5
    two_handed_prob: float = 0.25
    hand_size: float = 48.0
    movement_scale: float = 1.0
    tempo_min: float = 0.8
    tempo_max: float = 1.25
    duration_jitter: float = 0.25
    jitter: float = 1.5
    blur: float = 1.0
    texture: float = 0.08
    signer_variation: float = 1.0
    layout: str = "mp4"

    def __post_init__(self):
        # numpy scalars and ints given for float knobs are normalised, so equal configs serialise equally
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int | np.integer | np.floating) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif f.type == "int" and isinstance(value, np.integer):
                object.__setattr__(self, f.name, int(value))
        _int_in(self, "seed", 0, 2**63 - 1)
        _int_in(self, "vocab_size", 2, N_TRIPLES)
        for name, lo in (("n_train", 1), ("n_dev", 0), ("n_test", 0)):
            value = getattr(self, name)
            if value == ALL and isinstance(value, int | np.integer) and not isinstance(value, bool):
                if not self.from_corpus:
                    raise ValueError(f"{name}=-1 is invalid without from_corpus; allowed: an integer "
                                     f"{lo}..{MAX_SENTENCES}, or -1 (all the sentences of the split's file) when "
                                     "from_corpus names a folder of split files")
            else:
                _int_in(self, name, lo, MAX_SENTENCES, f"{lo}..{MAX_SENTENCES}, or -1 (all the sentences of the "
                        "split's file) when from_corpus names a folder of split files")
        _int_in(self, "n_signers", 1, 99)
        _int_in(self, "held_out_signers", 0, self.n_signers - 1, f"0..n_signers-1 ({self.n_signers - 1})")
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"split_mode={self.split_mode!r} is invalid; allowed: {' | '.join(SPLIT_MODES)}")
        if self.split_mode == "signer_independent" and self.held_out_signers < 1:
            raise ValueError("held_out_signers=0 is invalid with split_mode='signer_independent'; allowed: "
                             f"1..n_signers-1 ({self.n_signers - 1})")
        _int_in(self, "min_len", 1, 100)
        _int_in(self, "max_len", self.min_len, 100, f"min_len..100 ({self.min_len}..100)")
        _float_in(self, "rest_prob", 0.0, 1.0)
        for name in ("width", "height"):
            _int_in(self, name, 64, 4096)
            if getattr(self, name) % 2:
                raise ValueError(f"{name}={getattr(self, name)} is invalid; allowed: an even number 64..4096 "
                                 "(the mp4v encoder needs even frame sizes)")
        _int_in(self, "fps", 1, 120)
        _int_in(self, "sign_frames", 2, 200)
        _int_in(self, "transition_frames", 0, 100)
        _float_in(self, "noise", 0.0, 0.5)
        if not isinstance(self.from_corpus, str):
            raise ValueError(f"from_corpus={self.from_corpus!r} is invalid; allowed: a path string or ''")
        _int_in(self, "successors", 1, 100)
        _float_in(self, "grammar_noise", 0.0, 1.0)
        _float_in(self, "minimal_pair_frac", 0.0, 1.0)
        _float_in(self, "two_handed_prob", 0.0, 1.0)
        _float_in(self, "hand_size", 16.0, 120.0)
        _float_in(self, "movement_scale", 0.0, 3.0)
        _float_in(self, "tempo_min", 0.25, 4.0)
        _float_in(self, "tempo_max", self.tempo_min, 4.0, f"tempo_min..4 ({self.tempo_min}..4)")
        _float_in(self, "duration_jitter", 0.0, 0.9)
        _float_in(self, "jitter", 0.0, 20.0)
        _float_in(self, "blur", 0.0, 5.0)
        _float_in(self, "texture", 0.0, 0.5)
        _float_in(self, "signer_variation", 0.0, 2.0)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is invalid; allowed: {' | '.join(LAYOUTS)} (mp4: one video per "
                             "sentence; png: the PHOENIX-2014 frame folders)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Config from a mapping; unknown keys are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SynthConfig field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def _int_in(cfg: SynthConfig, name: str, lo: int, hi: int, allowed: str | None = None) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and lo <= value <= hi
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid; allowed: an integer {allowed or f'{lo}..{hi}'}")


def _float_in(cfg: SynthConfig, name: str, lo: float, hi: float, allowed: str | None = None) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) and lo <= value <= hi
    if not ok or math.isnan(float(value)):
        raise ValueError(f"{name}={value!r} is invalid; allowed: a number {allowed or f'{lo}..{hi}'}")


# --------------------------------------------------------------------------------------------------
# vocabulary, minimal pairs, grammar


@dataclass(frozen=True)
class SignDef:
    """How a gloss is signed: the three phonological attributes plus whether the other hand mirrors it."""

    gloss: str
    handshape: str
    location: str
    movement: str
    two_handed: bool = False

    def attributes(self) -> tuple[str, str, str]:
        return (self.handshape, self.location, self.movement)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gloss_names(n: int) -> list[str]:
    """``n`` distinct PHOENIX-like gloss names (``REGEN``, ..., then ``REGEN2``, ...)."""
    k = len(GLOSS_NAMES)
    return [GLOSS_NAMES[i % k] + ("" if i < k else str(i // k + 1)) for i in range(n)]


def _triple(index: int) -> tuple[int, int, int]:
    h = index % len(HANDSHAPES)
    rest = index // len(HANDSHAPES)
    return h, rest % len(LOCATIONS), rest // len(LOCATIONS)


def _triple_index(t: tuple[int, int, int]) -> int:
    return t[0] + len(HANDSHAPES) * (t[1] + len(LOCATIONS) * t[2])


def _sign(gloss: str, t: tuple[int, int, int], two_handed: bool) -> SignDef:
    return SignDef(gloss, HANDSHAPES[t[0]], LOCATIONS[t[1]], MOVEMENTS[t[2]], bool(two_handed))


def grammar_vocabulary(cfg: SynthConfig) -> tuple[list[SignDef], set[frozenset[str]]]:
    """V signs with distinct (handshape, location, movement) triples, ``minimal_pair_frac`` of them built
    as minimal pairs (partners differ in one attribute, cycling handshape -> location -> movement).

    Returns the definitions (in gloss-name order) and the constructed pairs.
    """
    rng = np.random.default_rng([cfg.seed, 101])
    V = cfg.vocab_size
    used: set[int] = set()
    keys: list[tuple[int, int, int]] = []
    pairs: list[tuple[int, int]] = []
    sizes = (len(HANDSHAPES), len(LOCATIONS), len(MOVEMENTS))
    for i in range(min(V // 2, int(round(V * cfg.minimal_pair_frac / 2)))):
        attr = i % 3
        for _ in range(1000):
            base = _triple(int(rng.integers(N_TRIPLES)))
            if _triple_index(base) in used:
                continue
            options = []
            for v in range(sizes[attr]):
                partner = tuple(v if a == attr else base[a] for a in range(3))
                if v != base[attr] and _triple_index(partner) not in used:
                    options.append(partner)
            if options:
                partner = options[int(rng.integers(len(options)))]
                used.update((_triple_index(base), _triple_index(partner)))
                pairs.append((len(keys), len(keys) + 1))
                keys.extend((base, partner))
                break
    free = [t for t in rng.permutation(N_TRIPLES).tolist() if t not in used]
    keys.extend(_triple(t) for t in free[: V - len(keys)])
    two_handed = rng.random(V) < cfg.two_handed_prob
    for a, b in pairs:  # partners must differ in one attribute only, so they share the hand count
        two_handed[b] = two_handed[a]
    # shuffle which name gets which sign, so that pair partners are not neighbours in the gloss order
    names = gloss_names(V)
    order = rng.permutation(V)
    signs = [_sign(names[order[j]], keys[j], two_handed[j]) for j in range(V)]
    constructed = {frozenset((signs[a].gloss, signs[b].gloss)) for a, b in pairs}
    signs.sort(key=lambda s: names.index(s.gloss))
    return signs, constructed


def hashed_vocabulary(glosses: list[str], cfg: SynthConfig) -> tuple[list[SignDef], list[list[str]]]:
    """Sign definitions for an external vocabulary: each gloss hashed with the seed to a triple, probing
    for a free one so triples stay distinct while V <= 720, then distinct (triple, two-handed) while
    V <= 1440; beyond that definitions are shared (returned as groups of glosses).
    """
    used_triples: set[int] = set()
    used_keys: set[tuple[int, bool]] = set()
    signs = []
    for gloss in sorted(glosses):
        digest = hashlib.sha256(f"{cfg.seed}\x00{gloss}".encode()).digest()
        h = int.from_bytes(digest[:8], "big")
        two = (int.from_bytes(digest[8:12], "big") / 2**32) < cfg.two_handed_prob
        t = h % N_TRIPLES
        if len(used_triples) < N_TRIPLES:
            while t in used_triples:
                t = (t + 1) % N_TRIPLES
        elif len(used_keys) < 2 * N_TRIPLES:
            key = 2 * t + two
            while (key // 2, bool(key % 2)) in used_keys:
                key = (key + 1) % (2 * N_TRIPLES)
            t, two = key // 2, bool(key % 2)
        used_triples.add(t)
        used_keys.add((t, two))
        signs.append(_sign(gloss, _triple(t), two))
    groups: dict[tuple, list[str]] = {}
    for s in signs:
        groups.setdefault((*s.attributes(), s.two_handed), []).append(s.gloss)
    shared = [g for g in groups.values() if len(g) > 1]
    return signs, shared


def minimal_pairs(signs: list[SignDef], constructed: set[frozenset[str]] = frozenset()) -> list[dict[str, Any]]:
    """All pairs of signs that differ in exactly one of handshape/location/movement (same hand count)."""
    out = []
    for attr in range(3):
        buckets: dict[tuple, list[SignDef]] = {}
        for s in signs:
            a = s.attributes()
            buckets.setdefault((s.two_handed, *a[:attr], *a[attr + 1:]), []).append(s)
        for group in buckets.values():
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    x, y = sorted((group[i].gloss, group[j].gloss))
                    out.append({"a": x, "b": y, "differs_in": ATTRIBUTES[attr],
                                "constructed": frozenset((x, y)) in constructed})
    out.sort(key=lambda p: (p["a"], p["b"]))
    return out


@dataclass(frozen=True)
class Grammar:
    """Sparse bigram grammar over gloss indices: a start distribution and a few successors per gloss."""

    start: np.ndarray  # (V,) probabilities
    successors: list[list[int]]
    probs: list[np.ndarray]
    noise: float

    @classmethod
    def build(cls, cfg: SynthConfig) -> Grammar:
        rng = np.random.default_rng([cfg.seed, 102])
        V = cfg.vocab_size
        cycle = rng.permutation(V)
        # one successor of each gloss follows a random cycle, so every gloss is reachable
        nxt = {int(cycle[i]): int(cycle[(i + 1) % V]) for i in range(V)}
        succ, probs = [], []
        for g in range(V):
            others = [x for x in range(V) if x not in (g, nxt[g])]
            k = min(cfg.successors - 1, len(others))
            extra = rng.choice(others, size=k, replace=False).tolist() if k else []
            succ.append([nxt[g], *(int(x) for x in extra)])
            probs.append(rng.dirichlet(np.full(len(succ[-1]), 1.5)))
        return cls(rng.dirichlet(np.ones(V)), succ, probs, cfg.grammar_noise)

    def sample(self, length: int, rng: np.random.Generator) -> list[int]:
        V = len(self.start)
        out = [int(rng.choice(V, p=self.start))]
        while len(out) < length:
            prev = out[-1]
            if V > 1 and rng.random() < self.noise:
                nxt = int(rng.integers(V - 1))
                out.append(nxt + (nxt >= prev))  # uniform over the glosses other than prev
            else:
                out.append(self.successors[prev][int(rng.choice(len(self.probs[prev]), p=self.probs[prev]))])
        return out

    def to_json(self, names: list[str]) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "start": {names[i]: round(float(p), 6) for i, p in enumerate(self.start)},
            "successors": {
                names[g]: {names[s]: round(float(p), 6) for s, p in zip(self.successors[g], self.probs[g], strict=True)}
                for g in range(len(names))
            },
        }


# --------------------------------------------------------------------------------------------------
# external sentences (from_corpus)


@dataclass(frozen=True)
class SourceSentence:
    """One sentence of a from_corpus file: its sample id there, its glosses and where it was read."""

    id: str
    glosses: tuple[str, ...]
    line: int


def read_corpus_rows(path: Path) -> tuple[str, list[SourceSentence]]:
    """(format, sentences with their ids) of a PHOENIX-2014 CSV, a PHOENIX-2014-T CSV or an STM file.

    Sentences without glosses are left out (nothing to render); a file with none left is an error.
    """
    if not path.is_file():
        raise ValueError(f"from_corpus={str(path)!r}: file not found (expected a PHOENIX corpus CSV, an STM, or a "
                         "folder holding one such file per split)")
    text = path.read_text(encoding="utf-8")
    first = next((line for line in text.splitlines() if line.strip()), "")
    rows: list[SourceSentence] = []
    if first.strip() == "|".join(PHOENIX_HEADER):
        fmt = "phoenix2014_csv"
        rows = [SourceSentence(r["id"], tuple(r["annotation"].split()), lineno)
                for lineno, r in read_pipe_table(path, PHOENIX_HEADER, "PHOENIX-2014 corpus CSV")]
    elif first.startswith("name|video|"):
        header = first.strip().split("|")
        if "orth" not in header:
            raise ValueError(f"from_corpus={str(path)!r}: PHOENIX-2014-T header without an 'orth' column")
        col, name = header.index("orth"), header.index("name")
        fmt = "phoenix2014T_csv"
        for lineno, line in enumerate(text.splitlines()[1:], start=2):
            r = line.split("|")
            if line.strip() and len(r) == len(header):
                rows.append(SourceSentence(r[name], tuple(r[col].split()), lineno))
    else:
        fmt = "stm"
        for lineno, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts or line.startswith(";;"):
                continue
            if len(parts) < 5:
                raise ValueError(f"from_corpus={str(path)!r}:{lineno}: {len(parts)} fields; expected an STM line "
                                 "'<id> <channel> <speaker> <start> <end> <glosses...>' or a PHOENIX CSV header")
            rows.append(SourceSentence(parts[0], tuple(parts[5:]), lineno))
    rows = [r for r in rows if r.glosses]
    if not rows:
        raise ValueError(f"from_corpus={str(path)!r}: no non-empty sentences ({fmt})")
    bad = sorted({g for r in rows for g in r.glosses if "|" in g})
    if bad:
        raise ValueError(f"from_corpus={str(path)!r}: glosses containing '|' cannot be written to a corpus CSV: {bad[:5]}")
    return fmt, rows


def read_corpus_sentences(path: Path) -> tuple[str, list[tuple[str, ...]]]:
    """(format, sentences) of a PHOENIX-2014 CSV, a PHOENIX-2014-T CSV or an STM file."""
    fmt, rows = read_corpus_rows(path)
    return fmt, [r.glosses for r in rows]


def find_split_files(folder: Path) -> dict[str, Path]:
    """The train/dev/test files of a from_corpus folder, split -> path.

    A split's file is the one file named ``[<anything>(-|_|.)]<split>.stm`` or ``...<split>.corpus.csv``:
    ``phoenix2014-groundtruth-train.stm``, ``train.stm``, ``train.corpus.csv`` (PHOENIX-2014
    ``annotations/manual/``), ``PHOENIX-2014-T.train.corpus.csv``. When the folder itself holds none, its
    ``annotations/manual/`` is searched, so a corpus root can be named. A split with no file, or with
    several, is an error naming the folder and what was expected: the split must be unambiguous.
    """
    def scan(where: Path) -> dict[str, list[str]]:
        names = sorted(p.name for p in where.iterdir() if p.is_file())
        return {split: [n for n in names if re.fullmatch(SPLIT_FILE.format(split=split), n)] for split in SPLITS}

    where, found = folder, scan(folder)
    manual = folder / "annotations" / "manual"
    if not any(found.values()) and manual.is_dir():
        where, found = manual, scan(manual)
    missing = [split for split in SPLITS if not found[split]]
    several = {split: names for split, names in found.items() if len(names) > 1}
    if missing or several:
        problems = [f"no {split} file" for split in missing]
        problems += [f"{len(names)} {split} files ({', '.join(names)})" for split, names in several.items()]
        have = ", ".join(f"{split}: {names[0]}" for split, names in found.items() if len(names) == 1)
        raise ValueError(
            f"from_corpus={str(folder)!r}: {'; '.join(problems)} in {where}"
            + (" (nor in annotations/manual/)" if where == folder and manual.is_dir() else "")
            + "; expected exactly one file per split, named *-<split>.stm, <split>.stm or *<split>.corpus.csv, for "
            + f"each of {', '.join(SPLITS)}" + (f" (found {have})" if have else "")
        )
    return {split: where / found[split][0] for split in SPLITS}


def _check_source_ids(files: dict[str, Path], rows: dict[str, list[SourceSentence]]) -> None:
    """Source ids become sample ids (folder names, CSV and CTM/STM fields): unique and usable as such."""
    first: dict[str, str] = {}
    for split in SPLITS:
        for r in rows[split]:
            where = f"from_corpus: {files[split]}:{r.line}"
            if r.id in first:
                raise ValueError(f"{where}: duplicate id {r.id!r} (first in {first[r.id]}); the split files' ids "
                                 "name the rendered samples, so they must be unique across train, dev and test")
            if not re.fullmatch(r"[^\s/\\|]+", r.id) or r.id.startswith("."):
                raise ValueError(f"{where}: id {r.id!r} cannot name a sample; expected no whitespace, '/', '\\', "
                                 "'|' or leading '.'")
            first[r.id] = f"{files[split]}:{r.line}"


def _split_file_sentences(cfg: SynthConfig) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, list[str]],
                                                     dict[str, Any]]:
    """(sentences, ids, source metadata) of a from_corpus folder: each split's file, in file order.

    n_train/n_dev/n_test cap each split (the first n sentences; -1 = all); a file with fewer gives all of them.
    """
    folder = Path(cfg.from_corpus).expanduser()
    files = find_split_files(folder)
    caps = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    sentences, ids, rows, described = {}, {}, {}, {}
    for split in SPLITS:
        fmt, all_rows = read_corpus_rows(files[split])
        rows[split] = all_rows if caps[split] == ALL else all_rows[: caps[split]]
        sentences[split] = [r.glosses for r in rows[split]]
        ids[split] = [r.id for r in rows[split]]
        described[split] = {"file": str(files[split]), "format": fmt, "sentences_in_file": len(all_rows),
                            "vocabulary_in_file": len({g for r in all_rows for g in r.glosses} - set(REST_GLOSSES))}
    _check_source_ids(files, rows)
    source = {"path": cfg.from_corpus, "format": "split_files", "ids": "source", "splits": described}
    return sentences, ids, source


def _split_counts(cfg: SynthConfig, available: int) -> dict[str, int]:
    """Requested counts, or (when the file has fewer sentences) all of them in the requested proportions."""
    want = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    total = sum(want.values())
    if available >= total:
        return want
    dev = int(round(available * cfg.n_dev / total))
    test = int(round(available * cfg.n_test / total))
    while available - dev - test < 1:  # keep at least one training sentence
        if dev >= test:
            dev -= 1
        else:
            test -= 1
    return {"train": available - dev - test, "dev": dev, "test": test}


# --------------------------------------------------------------------------------------------------
# signers


@dataclass(frozen=True)
class Signer:
    """Fixed appearance of one signer (colours are BGR)."""

    name: str
    held_out: bool
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    texture: str  # plain | gradient | stripes | blobs
    texture_seed: int
    scale: float
    offset_x: float
    offset_y: float
    head_scale: float
    shoulder_scale: float

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("scale", "offset_x", "offset_y", "head_scale", "shoulder_scale"):
            d[k] = round(d[k], 4)
        return d


SKIN_TONES = ((185, 205, 240), (160, 185, 228), (130, 165, 215), (100, 135, 190), (75, 105, 155), (55, 78, 118))
HAIR_COLOURS = ((20, 20, 25), (30, 45, 75), (60, 90, 140), (110, 170, 210), (150, 150, 155), (35, 35, 120))
TEXTURES = ("plain", "gradient", "stripes", "blobs")


def _luma(bgr) -> float:
    return 0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]


def make_signers(cfg: SynthConfig) -> list[Signer]:
    """Signer01..SignerNN with contrasting skin/shirt/background (hands must stand out at ~40x40)."""
    rng = np.random.default_rng([cfg.seed, 103])
    held = set(rng.choice(cfg.n_signers, size=cfg.held_out_signers, replace=False).tolist())
    var = cfg.signer_variation
    signers = []
    for i in range(cfg.n_signers):
        tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        skin = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in tone)
        shirt = background = (0, 0, 0)
        for _ in range(500):  # rejection sampling until the luminance contrasts hold
            shirt = tuple(int(c) for c in rng.integers(0, 256, 3))
            if abs(_luma(shirt) - _luma(skin)) >= 70:
                break
        for _ in range(500):
            grey, tint = rng.integers(0, 256), rng.integers(-30, 31, 3)
            background = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
            if abs(_luma(background) - _luma(skin)) >= 50 and abs(_luma(background) - _luma(shirt)) >= 40:
                break
        signers.append(Signer(
            name=f"Signer{i + 1:02d}",
            held_out=i in held,
            skin=skin,
            shirt=shirt,
            hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
            background=background,
            texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
            texture_seed=int(rng.integers(2**31)),
            scale=float(1.0 + var * rng.uniform(-0.07, 0.06)),
            offset_x=float(var * rng.uniform(-9, 9)),
            offset_y=float(var * rng.uniform(-6, 6)),
            head_scale=float(1.0 + var * rng.uniform(-0.08, 0.08)),
            shoulder_scale=float(1.0 + var * rng.uniform(-0.08, 0.08)),
        ))
    return signers


# --------------------------------------------------------------------------------------------------
# sentence plans (everything a worker needs; computed in the parent so the output ignores `workers`)


@dataclass(frozen=True)
class SentencePlan:
    id: str
    split: str
    index: int
    signer: int
    glosses: tuple[str, ...]
    tempo: float
    sign_frames: tuple[int, ...]  # per gloss (rest poses included)
    transition_frames: tuple[int, ...]  # between consecutive glosses

    @property
    def frames(self) -> int:
        return sum(self.sign_frames) + sum(self.transition_frames)


def _durations(cfg: SynthConfig, n: int, tempo: float, rng: np.random.Generator) -> tuple[tuple, tuple]:
    j = cfg.duration_jitter
    signs = tuple(max(2, int(round(cfg.sign_frames * rng.uniform(1 - j, 1 + j) / tempo))) for _ in range(n))
    lo = 1 if cfg.transition_frames > 0 else 0
    trans = tuple(max(lo, int(round(cfg.transition_frames * rng.uniform(1 - j, 1 + j) / tempo)))
                  for _ in range(n - 1))
    return signs, trans


def _split_signers(cfg: SynthConfig, signers: list[Signer], split: str) -> list[int]:
    seen = [i for i, s in enumerate(signers) if not s.held_out]
    if split == "train":
        return seen
    if cfg.split_mode == "signer_independent":
        return [i for i, s in enumerate(signers) if s.held_out]
    return list(range(len(signers)))


def plan_sentences(cfg: SynthConfig, signers: list[Signer], sentences: dict[str, list[tuple[str, ...]]],
                   ids: dict[str, list[str]] | None = None) -> dict[str, list[SentencePlan]]:
    """Signer, tempo and frame counts of every sentence, from per-(seed, split, index) streams.

    Sample ids are ``ids[split][index]`` when given (the ids of from_corpus split files), else
    ``synthsign_<split>_<index>``; the id does not enter any random stream.
    """
    plans: dict[str, list[SentencePlan]] = {}
    for code, split in enumerate(SPLITS):
        allowed = _split_signers(cfg, signers, split)
        width = max(5, len(str(len(sentences[split]) - 1)))
        plans[split] = []
        for index, glosses in enumerate(sentences[split]):
            rng = np.random.default_rng([cfg.seed, code, index, 0])
            signer = allowed[int(rng.integers(len(allowed)))]
            tempo = float(rng.uniform(cfg.tempo_min, cfg.tempo_max))
            sign_n, trans_n = _durations(cfg, len(glosses), tempo, rng)
            sample_id = ids[split][index] if ids is not None else f"synthsign_{split}_{index:0{width}d}"
            plans[split].append(SentencePlan(sample_id, split, index, signer,
                                             tuple(glosses), round(tempo, 4), sign_n, trans_n))
    return plans


def grammar_sentences(cfg: SynthConfig, grammar: Grammar, names: list[str]) -> dict[str, list[tuple[str, ...]]]:
    out = {}
    counts = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    for code, split in enumerate(SPLITS):
        rng = np.random.default_rng([cfg.seed, 200 + code])
        out[split] = []
        for _ in range(counts[split]):
            length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
            glosses = [names[g] for g in grammar.sample(length, rng)]
            if rng.random() < cfg.rest_prob:
                glosses.insert(0, "__ON__")
            if rng.random() < cfg.rest_prob:
                glosses.append("__OFF__")
            out[split].append(tuple(glosses))
    return out


# --------------------------------------------------------------------------------------------------
# drawing


def _finger(angle_deg: float, length: float, base=(0.0, 0.15), t=0.4):
    a = math.radians(angle_deg)
    return ("line", np.array([base, (base[0] + math.sin(a) * length, base[1] - math.cos(a) * length)]), t)


def _arc(rx, ry, a0, a1, t, n=14):
    a = np.radians(np.linspace(a0, a1, n))
    return ("polyline", np.stack([rx * np.cos(a), ry * np.sin(a)], axis=1), t)


def _claw_finger(x: float):
    return ("polyline", np.array([(x * 0.8, 0.0), (x * 1.25, -0.75), (x * 1.25 + 0.3, -0.95)]), 0.32)


PALM = ("circle", np.array([[0.0, 0.2]]), 0.55)
# Sprites in hand units u = hand_size / 2, palm centre at the origin, fingers up (-y), thumb toward -x
# (the outside of the dominant hand); thicknesses/radii in u. Silhouettes are what survives 40x40.
SPRITES: dict[str, list[tuple]] = {
    "fist": [("circle", np.array([[0.0, 0.05]]), 0.72)],
    "flat": [("line", np.array([(0.0, -0.7), (0.0, 0.35)]), 1.0)],
    "spread": [("circle", np.array([[0.0, 0.2]]), 0.5)] + [_finger(a, 1.0) for a in (-80, -32, -10, 12, 34)],
    "point": [PALM, _finger(4, 1.2, base=(0.1, 0.0))],
    "v": [PALM, _finger(-22, 1.15), _finger(22, 1.15)],
    "l": [PALM, _finger(2, 1.15, base=(0.15, 0.0)), _finger(-90, 1.0, base=(0.0, 0.15))],
    "y": [PALM, _finger(-65, 1.0), _finger(62, 0.95)],
    "claw": [("circle", np.array([[0.0, 0.25]]), 0.5)] + [_claw_finger(x) for x in (-0.45, -0.15, 0.15, 0.45)],
    "c": [_arc(0.62, 0.78, 40, 320, 0.42)],
}


def _compile_sprite(prims: list[tuple]) -> tuple[np.ndarray, list[tuple[str, int, int, float]]]:
    """All points of a sprite in one array (one matrix product per drawn hand) + (kind, start, stop, size)."""
    pts, parts, start = [], [], 0
    for kind, p, size in prims:
        pts.append(p)
        parts.append((kind, start, start + len(p), size))
        start += len(p)
    return np.concatenate(pts).astype(np.float64), parts


SPRITE_LIST = [_compile_sprite(SPRITES[h]) for h in HANDSHAPES]


class _Canvas:
    """Maps nominal 210x260 coordinates of one signer (scale/offset) and sentence (camera shift) to pixels."""

    SHIFT = 4  # fractional bits for cv2 drawing: sub-pixel positions keep slow movements smooth

    def __init__(self, cfg: SynthConfig, signer: Signer, cam: tuple[float, float]):
        self.sx, self.sy = cfg.width / NOMINAL_W, cfg.height / NOMINAL_H
        self.s = signer.scale
        self.ox, self.oy = signer.offset_x + cam[0], signer.offset_y + cam[1]
        self.k = self.s * min(self.sx, self.sy)  # nominal length -> px

    def px(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x = (MID_X + (pts[:, 0] - MID_X) * self.s + self.ox) * self.sx
        y = (NOMINAL_H + (pts[:, 1] - NOMINAL_H) * self.s + self.oy) * self.sy
        return np.stack([x, y], axis=1)

    def fixed(self, pts_px: np.ndarray) -> np.ndarray:
        return np.round(pts_px * (1 << self.SHIFT)).astype(np.int32)

    def point(self, x: float, y: float) -> tuple[int, int]:
        """One nominal point as fixed-point pixel coordinates (the per-frame fast path)."""
        f = 1 << self.SHIFT
        return (int(round((MID_X + (x - MID_X) * self.s + self.ox) * self.sx * f)),
                int(round((NOMINAL_H + (y - NOMINAL_H) * self.s + self.oy) * self.sy * f)))


def _shade(colour, f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * f, 0, 255)) for c in colour)


def _background(cfg: SynthConfig, signer: Signer) -> np.ndarray:
    h, w = cfg.height, cfg.width
    rng = np.random.default_rng([cfg.seed, 105, signer.texture_seed])
    amp = cfg.texture * 255.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if signer.texture == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        tex = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)) / (0.5 * math.hypot(w, h))
    elif signer.texture == "stripes":
        a, period = rng.uniform(0, np.pi), rng.uniform(18, 40) * min(w / NOMINAL_W, h / NOMINAL_H)
        tex = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    elif signer.texture == "blobs":
        coarse = rng.uniform(-1, 1, (6, 5)).astype(np.float32)
        tex = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        tex = np.zeros((h, w), np.float32)
    img = np.asarray(signer.background, np.float32)[None, None, :] + amp * np.clip(tex, -1, 1)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _body_layer(cfg: SynthConfig, signer: Signer, canvas: _Canvas) -> np.ndarray:
    """Background, torso, neck and head: everything that does not move within a sentence."""
    img = _background(cfg, signer)
    aa, sh, k = cv2.LINE_AA, _Canvas.SHIFT, canvas.k
    ss, hs = signer.shoulder_scale, signer.head_scale
    shirt, skin = signer.shirt, signer.skin
    edge = _shade(shirt, 0.55) if _luma(shirt) > 60 else _shade((90, 90, 90), 1.0)
    sw = SHOULDER_HALF * ss
    torso = canvas.fixed(canvas.px([(MID_X - 14, 110), (MID_X - sw, SHOULDER_Y - 4), (MID_X - sw - 12, SHOULDER_Y + 14),
                                    (MID_X - sw - 16, NOMINAL_H + 20), (MID_X + sw + 16, NOMINAL_H + 20),
                                    (MID_X + sw + 12, SHOULDER_Y + 14), (MID_X + sw, SHOULDER_Y - 4),
                                    (MID_X + 14, 110)]))
    cv2.polylines(img, [torso], True, edge, max(1, round(2 * k)), aa, sh)
    cv2.fillPoly(img, [torso], shirt, aa, sh)
    neck = canvas.fixed(canvas.px([(MID_X - 10, 84), (MID_X + 10, 84), (MID_X + 11, 114), (MID_X - 11, 114)]))
    cv2.fillPoly(img, [neck], _shade(skin, 0.85), aa, sh)
    (cx, cy), (ax, ay) = HEAD_XY, HEAD_AXES
    centre = canvas.fixed(canvas.px([(cx, cy)]))[0]
    axes = (int(round(ax * hs * k * 16)), int(round(ay * hs * k * 16)))
    for dx in (-1, 1):  # ears
        ear = canvas.fixed(canvas.px([(cx + dx * ax * hs, cy + 2)]))[0]
        cv2.circle(img, tuple(ear), int(round(5 * k * 16)), _shade(skin, 0.9), -1, aa, sh)
    cv2.ellipse(img, tuple(centre), (axes[0] + 24, axes[1] + 24), 0, 0, 360, _shade(skin, 0.45), -1, aa, sh)
    cv2.ellipse(img, tuple(centre), axes, 0, 0, 360, skin, -1, aa, sh)
    hair_c = canvas.fixed(canvas.px([(cx, cy - 6 * hs)]))[0]
    cv2.ellipse(img, tuple(hair_c), (axes[0] + 16, int(axes[1] * 0.85)), 0, 180, 360, signer.hair, -1, aa, sh)
    dark = _shade(skin, 0.3)
    for dx in (-9, 9):
        eye = canvas.fixed(canvas.px([(cx + dx * hs, cy + 2)]))[0]
        cv2.circle(img, tuple(eye), int(round(2.6 * k * 16)), dark, -1, aa, sh)
    mouth = canvas.fixed(canvas.px([(cx - 7 * hs, cy + 17 * hs), (cx + 7 * hs, cy + 17 * hs)]))
    cv2.line(img, tuple(mouth[0]), tuple(mouth[1]), dark, max(1, round(1.5 * k)), aa, sh)
    return img


def _draw_hand(img, canvas: _Canvas, shape: int, xy, scale: float, angle: float, mirror: bool,
               skin, outline, unit: float) -> None:
    """Draw a handshape sprite centred at nominal ``xy`` (outline pass, then fill pass)."""
    u = unit * scale * canvas.k  # px per hand unit
    a = math.radians(angle)
    c, s = math.cos(a) * u, math.sin(a) * u
    m = -1.0 if mirror else 1.0
    pts, parts = SPRITE_LIST[shape]
    f = 1 << _Canvas.SHIFT
    cx = (MID_X + (xy[0] - MID_X) * canvas.s + canvas.ox) * canvas.sx
    cy = (NOMINAL_H + (xy[1] - NOMINAL_H) * canvas.s + canvas.oy) * canvas.sy
    x, y = pts[:, 0] * m, pts[:, 1]
    fixed = np.empty(pts.shape, np.int32)
    np.rint((cx + c * x - s * y) * f, out=fixed[:, 0], casting="unsafe")
    np.rint((cy + s * x + c * y) * f, out=fixed[:, 1], casting="unsafe")
    ow = max(1, int(round(0.09 * u)))
    sh, aa = _Canvas.SHIFT, cv2.LINE_AA
    for colour, grow in ((outline, ow), (skin, 0)):
        for kind, i, j, size in parts:
            if kind == "circle":
                cv2.circle(img, (int(fixed[i, 0]), int(fixed[i, 1])), int(round((size * u + grow) * f)), colour,
                           -1, aa, sh)
            elif kind == "line":
                cv2.line(img, (int(fixed[i, 0]), int(fixed[i, 1])), (int(fixed[i + 1, 0]), int(fixed[i + 1, 1])),
                         colour, max(1, int(round(size * u))) + 2 * grow, aa, sh)
            else:
                cv2.polylines(img, [fixed[i:j]], False, colour, max(1, int(round(size * u))) + 2 * grow, aa, sh)


def _elbow(sx: float, sy: float, wx: float, wy: float, side: float) -> tuple[float, float]:
    """Two-bone IK: the elbow that bends outward (``side`` = -1 left, +1 right) and down."""
    dx, dy = wx - sx, wy - sy
    norm = max(math.hypot(dx, dy), 1e-6)
    dist = min(max(norm, 1e-3), UPPER_ARM + FOREARM - 1e-3)
    along = (UPPER_ARM**2 - FOREARM**2 + dist**2) / (2 * dist)
    h = math.sqrt(max(UPPER_ARM**2 - along**2, 0.0))
    ux, uy = dx / norm, dy / norm
    best = None
    for sign in (1.0, -1.0):
        ex, ey = sx + ux * along - uy * h * sign, sy + uy * along + ux * h * sign
        score = side * (ex - MID_X) + 0.5 * ey
        if best is None or score > best[0]:
            best = (score, ex, ey)
    return best[1], best[2]


# A hand pose: (x, y, scale, angle, handshape index) in nominal coordinates.
Pose = tuple[float, float, float, float, int]


def _movement(name: str, t: float) -> tuple[float, float, float, float]:
    """(dx, dy, scale, angle) of a movement path at phase t in [0, 1]; offsets in amplitude units."""
    if name == "up":
        return 0.0, 1.0 - 2.0 * t, 1.0, 0.0
    if name == "down":
        return 0.0, -1.0 + 2.0 * t, 1.0, 0.0
    if name == "side_to_side":
        return 1.1 * math.sin(2 * math.pi * t), 0.0, 1.0, 0.0
    if name == "circle":
        return math.sin(2 * math.pi * t), -math.cos(2 * math.pi * t), 1.0, 0.0
    if name == "arc":
        return -1.1 * math.cos(math.pi * t), 0.5 - 1.1 * math.sin(math.pi * t), 1.0, 0.0
    if name == "zigzag":
        return (2 / math.pi) * math.asin(math.sin(4 * math.pi * t)), -1.0 + 2.0 * t, 1.0, 0.0
    if name == "toward":
        return 0.0, 0.0, 0.72 + 0.6 * t, 0.0
    if name == "away":
        return 0.0, 0.0, 1.32 - 0.6 * t, 0.0
    if name == "twist":
        return 0.0, 0.0, 1.0, 70.0 * math.sin(2 * math.pi * t)
    return 0.0, 0.0, 1.0, 0.0  # static


REST_POSE: Pose = (*REST_DOMINANT, REST_SCALE, REST_ANGLE, REST_SHAPE)


def _sign_pose(sign: SignDef | None, t: float, cfg: SynthConfig) -> tuple[Pose, Pose]:
    """(dominant, non-dominant) poses of a sign at phase t; the non-dominant pose is given un-mirrored
    (as if it were a dominant hand) and mirrored about the body midline when drawn. None = rest pose."""
    if sign is None:
        return REST_POSE, REST_POSE
    x, y = LOCATION_XY[sign.location]
    dx, dy, scale, da = _movement(sign.movement, t)
    amp = MOVEMENT_AMPLITUDE * cfg.movement_scale
    shape = HANDSHAPES.index(sign.handshape)
    if sign.two_handed and abs(x - MID_X) < 0.5 * cfg.hand_size:
        x -= 0.62 * cfg.hand_size  # two hands on the midline would cover each other
    dom = (x + dx * amp, y + dy * amp, scale, LOCATION_ANGLE.get(sign.location, 0.0) + da, shape)
    return dom, (dom if sign.two_handed else REST_POSE)


def _lerp_pose(a: Pose, b: Pose, w: float) -> Pose:
    e = w * w * (3 - 2 * w)  # smoothstep: hands accelerate out of one sign and decelerate into the next
    return (a[0] + (b[0] - a[0]) * e, a[1] + (b[1] - a[1]) * e, a[2] + (b[2] - a[2]) * e,
            a[3] + (b[3] - a[3]) * e, a[4] if w < 0.5 else b[4])


def pose_track(plan: SentencePlan, signs: dict[str, SignDef], cfg: SynthConfig) -> list[tuple[Pose, Pose]]:
    """Per-frame (dominant, non-dominant) poses: each sign's path, joined by co-articulation frames."""
    track: list[tuple[Pose, Pose]] = []
    for i, gloss in enumerate(plan.glosses):
        sign = None if gloss in REST_GLOSSES else signs[gloss]
        n = plan.sign_frames[i]
        if i > 0:
            prev = track[-1]
            nxt = _sign_pose(sign, 0.0, cfg)
            m = plan.transition_frames[i - 1]
            for j in range(1, m + 1):
                w = j / (m + 1)
                track.append((_lerp_pose(prev[0], nxt[0], w), _lerp_pose(prev[1], nxt[1], w)))
        for f in range(n):
            track.append(_sign_pose(sign, f / (n - 1) if n > 1 else 0.5, cfg))
    return track


def _draw_arm_and_hand(img, canvas: _Canvas, pose: Pose, dominant: bool, signer: Signer, cfg: SynthConfig,
                       sleeve, sleeve_edge, hand_edge) -> None:
    side = -1.0 if dominant else 1.0
    x, y, scale, angle, shape = pose
    if not dominant:  # mirror about the body midline
        x, angle = 2 * MID_X - x, -angle
    a = math.radians(angle)
    reach = 0.8 * (cfg.hand_size / 2) * scale  # palm centre -> wrist
    wx, wy = x - math.sin(a) * reach, y + math.cos(a) * reach
    sx, sy = MID_X + side * SHOULDER_HALF * signer.shoulder_scale, SHOULDER_Y
    ex, ey = _elbow(sx, sy, wx, wy, side)
    shoulder, elbow, wrist = canvas.point(sx, sy), canvas.point(ex, ey), canvas.point(wx, wy)
    k, sh, aa = canvas.k, _Canvas.SHIFT, cv2.LINE_AA
    for colour, grow in ((sleeve_edge, 2), (sleeve, 0)):
        cv2.line(img, shoulder, elbow, colour, int(round(16 * k)) + grow, aa, sh)
        cv2.line(img, elbow, wrist, colour, int(round(12 * k)) + grow, aa, sh)
    _draw_hand(img, canvas, shape, (x, y), scale, angle, not dominant, signer.skin, hand_edge, cfg.hand_size / 2)


NOISE_CELL = 5  # px at 210x260: about one pixel of the 40x40 frames the pipeline trains on


def render_frames(plan: SentencePlan, signs: dict[str, SignDef], signer: Signer, cfg: SynthConfig):
    """Yield the BGR uint8 frames of one sentence (deterministic given cfg.seed, split and index)."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(plan.split), plan.index, 1])
    cam = (float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)))
    canvas = _Canvas(cfg, signer, cam)
    body = _body_layer(cfg, signer, canvas)
    sigma = float(rng.uniform(0.0, cfg.blur))
    ksize = 2 * int(math.ceil(2.0 * sigma)) + 1  # +-2 sigma holds 95 % of the kernel; OpenCV's default is 3x bigger
    h, w = cfg.height, cfg.width
    pad = 32
    if cfg.noise > 0:
        # A per-video bank of noise tiles read at random offsets: per-pixel Gaussian statistics at a
        # fraction of the cost of drawing fresh noise for every frame.
        # drawn on a coarse grid (NOISE_CELL px) and upsampled: noise at the scale of the pipeline's
        # resized frames survives the resize (per-pixel noise averages out) and costs the mp4 encoder
        # far fewer bits (per-pixel noise made the default corpus ~0.9 GB)
        gh, gw = (h + pad) // NOISE_CELL + 2, (w + pad) // NOISE_CELL + 2
        coarse = rng.standard_normal((2, gh, gw, 3), dtype=np.float32)
        noise = np.stack([cv2.resize(c, (gw * NOISE_CELL, gh * NOISE_CELL), interpolation=cv2.INTER_LINEAR)
                          for c in coarse])[:, : h + pad, : w + pad]
        noise *= cfg.noise * 255.0
        pos = np.clip(noise, 0, 255).astype(np.uint8)
        neg = np.clip(-noise, 0, 255).astype(np.uint8)
    sleeve = _shade(signer.shirt, 0.82) if _luma(signer.shirt) > 50 else _shade((60, 60, 60), 1.0)
    sleeve_edge = _shade(signer.shirt, 0.45) if _luma(signer.shirt) > 60 else (95, 95, 95)
    hand_edge = _shade(signer.skin, 0.4)
    for dom, nondom in pose_track(plan, signs, cfg):
        jit = rng.normal(0.0, cfg.jitter, 4) if cfg.jitter > 0 else np.zeros(4)
        frame = body.copy()
        _draw_arm_and_hand(frame, canvas, (nondom[0] + jit[2], nondom[1] + jit[3], *nondom[2:]), False, signer, cfg,
                           sleeve, sleeve_edge, hand_edge)
        _draw_arm_and_hand(frame, canvas, (dom[0] + jit[0], dom[1] + jit[1], *dom[2:]), True, signer, cfg,
                           sleeve, sleeve_edge, hand_edge)
        if sigma >= 0.3:
            frame = cv2.GaussianBlur(frame, (ksize, ksize), sigma)
        if cfg.noise > 0:
            b, dy, dx = int(rng.integers(2)), int(rng.integers(pad)), int(rng.integers(pad))
            cv2.add(frame, pos[b, dy:dy + h, dx:dx + w], dst=frame)
            cv2.subtract(frame, neg[b, dy:dy + h, dx:dx + w], dst=frame)
        yield frame


# --------------------------------------------------------------------------------------------------
# writing


_SHARED: dict[str, Any] = {}


def _init_worker(shared: dict[str, Any]) -> None:
    cv2.setNumThreads(1)  # the pool already uses every core
    _SHARED.clear()
    _SHARED.update(shared)


def encoder_build() -> str:
    """The build that encodes the mp4s: OpenCV's version and its bundled FFmpeg's avcodec version."""
    found = re.search(r"avcodec:\s*YES \(([^)]*)\)", cv2.getBuildInformation())
    return f"OpenCV {cv2.__version__}" + (f", avcodec {found.group(1)}" if found else "")


def phoenix_frame_name(sample_id: str, frame: int) -> str:
    """File name of frame ``frame`` (0-based) of a sample in the PHOENIX-2014 release layout.

    The release names frames after the source video, the id less its ``_default-<n>`` segment suffix:
    ``01April_2010_Thursday_heute_default-0`` -> ``01April_2010_Thursday_heute.avi_pid0_fn000000-0.png``.
    """
    return PHOENIX_FRAME_NAME.format(video=re.sub(r"(?:_default)?-\d+$", "", sample_id), frame=frame)


def _render_png_task(plan: SentencePlan) -> tuple[str, int, str]:
    """Render one sentence as PHOENIX-2014 PNG frames (lossless); returns (id, frames written, rendered sha256)."""
    cfg: SynthConfig = _SHARED["cfg"]
    folder = Path(_SHARED["features"]) / plan.split / plan.id / "1"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    digest = hashlib.sha256()
    for frame in render_frames(plan, _SHARED["signs"], _SHARED["signers"][plan.signer], cfg):
        digest.update(np.ascontiguousarray(frame))
        path = folder / phoenix_frame_name(plan.id, n)
        if not cv2.imwrite(str(path), frame):
            raise RuntimeError(f"{path}: cv2.imwrite could not write the PNG frame (disk full or not writable?)")
        n += 1
    return plan.id, n, digest.hexdigest()


def _render_task(plan: SentencePlan) -> tuple[str, int, str]:
    """Render and encode one sentence; returns (id, frames written, sha256 of the rendered frames)."""
    cfg: SynthConfig = _SHARED["cfg"]
    if cfg.layout == "png":
        return _render_png_task(plan)
    path = Path(_SHARED["features"]) / plan.split / f"{plan.id}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), float(cfg.fps), (cfg.width, cfg.height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: cv2.VideoWriter could not open an {FOURCC!r} mp4 writer "
                           "(opencv-python-headless ships FFmpeg; is this OpenCV built without it?)")
    n = 0
    digest = hashlib.sha256()  # of the frames as rendered: what the encoder build cannot change
    try:
        for frame in render_frames(plan, _SHARED["signs"], _SHARED["signers"][plan.signer], cfg):
            digest.update(np.ascontiguousarray(frame))
            writer.write(frame)
            n += 1
    finally:
        writer.release()
    return plan.id, n, digest.hexdigest()


def _clear_outputs(out_root: Path) -> None:
    # only what generate() writes: out_root may hold other things (e.g. a DVC-tracked parent folder)
    (out_root / METADATA).unlink(missing_ok=True)
    for sub in ("annotations", "features"):
        if (out_root / sub).is_dir():
            shutil.rmtree(out_root / sub)


def _write_corpus_csv(path: Path, plans: list[SentencePlan], signers: list[Signer], layout: str = "mp4") -> None:
    lines = ["|".join(PHOENIX_HEADER)]
    folder = "{}.mp4" if layout == "mp4" else "{}/1/*.png"
    lines += [f"{p.id}|{folder.format(p.id)}|{signers[p.signer].name}|{' '.join(p.glosses)}" for p in plans]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _split_stats(plans: list[SentencePlan], signers: list[Signer]) -> dict[str, Any]:
    frames = [p.frames for p in plans]
    lengths = [sum(g not in REST_GLOSSES for g in p.glosses) for p in plans]
    return {
        "sentences": len(plans),
        "frames": int(sum(frames)),
        "min_frames": int(min(frames, default=0)),
        "max_frames": int(max(frames, default=0)),
        "mean_frames": round(float(np.mean(frames)), 3) if frames else 0.0,
        "glosses": int(sum(lengths)),
        "mean_glosses": round(float(np.mean(lengths)), 3) if lengths else 0.0,
        "signers": dict(sorted(Counter(signers[p.signer].name for p in plans).items())),
    }


def build_corpus(cfg: SynthConfig) -> dict[str, Any]:
    """Everything except the pixels: vocabulary, signers, grammar, sentence plans (deterministic)."""
    source = None
    grammar = None
    constructed: set[frozenset[str]] = set()
    shared: list[list[str]] = []
    ids = None
    if cfg.from_corpus and Path(cfg.from_corpus).expanduser().is_dir():
        sentences, ids, source = _split_file_sentences(cfg)
        signs, shared = hashed_vocabulary(sorted({g for s in sentences.values() for sent in s for g in sent}
                                                 - set(REST_GLOSSES)), cfg)
    elif cfg.from_corpus:
        path = Path(cfg.from_corpus).expanduser()
        capped = [f"{k}=-1" for k in ("n_train", "n_dev", "n_test") if getattr(cfg, k) == ALL]
        if capped:
            raise ValueError(f"{', '.join(capped)} is invalid with from_corpus={cfg.from_corpus!r} (one file: its "
                             "sentences are dealt to the splits at random); allowed: -1 (all) only when from_corpus "
                             "names a folder of split files, else an integer count")
        fmt, pool = read_corpus_sentences(path)
        counts = _split_counts(cfg, len(pool))
        order = np.random.default_rng([cfg.seed, 104]).permutation(len(pool)).tolist()
        sentences, start = {}, 0
        for split in SPLITS:
            sentences[split] = [pool[i] for i in order[start:start + counts[split]]]
            start += counts[split]
        vocab = sorted({g for s in sentences.values() for sent in s for g in sent} - set(REST_GLOSSES))
        signs, shared = hashed_vocabulary(vocab, cfg)
        source = {"path": cfg.from_corpus, "format": fmt, "sentences_in_file": len(pool),
                  "vocabulary_in_file": len({g for s in pool for g in s} - set(REST_GLOSSES))}
    else:
        signs, constructed = grammar_vocabulary(cfg)
        grammar = Grammar.build(cfg)
        sentences = grammar_sentences(cfg, grammar, [s.gloss for s in signs])
    signers = make_signers(cfg)
    plans = plan_sentences(cfg, signers, sentences, ids)
    return {"signs": signs, "constructed": constructed, "shared": shared, "grammar": grammar,
            "source": source, "signers": signers, "plans": plans}


def generate(cfg: SynthConfig, out_root: Path, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Render the corpus of ``cfg`` into ``out_root`` and return a summary (flat counts, JSON-safe).

    Written under ``out_root`` (read by :class:`ctca.data.corpus.SynthSignReader`)::

        annotations/manual/{train,dev,test}.corpus.csv   id|folder|signer|annotation
        features/fullFrame-210x260px/<split>/<id>.mp4    folder column = "<id>.mp4" (the folder name is
                                                         fixed, whatever cfg.width/height are)
        synthsign.json                                   config, vocabulary with sign definitions, signers,
                                                         grammar, minimal pairs, per-split and per-sample counts,
                                                         each sample's rendered_sha256, the encoder build

    With ``cfg.layout == "png"`` the videos are instead the PHOENIX-2014 release's frame folders, readable by
    ``open_corpus("phoenix2014", out_root)`` as well as by the SynthSign reader::

        features/fullFrame-210x260px/<split>/<id>/1/<video>.avi_pid0_fn000000-0.png, ...   folder column =
                                                         "<id>/1/*.png"; <video> = id less "_default-<n>"

    PNG is lossless: the decoded frames are the rendered frames, so their sha256 is ``rendered_sha256``.

    A previous corpus there (those three paths) is removed first; other files are left alone.
    ``synthsign.json`` is written last, so a folder that has it holds a complete corpus.

    What a video shows: a drawn signer (head, torso, two arms and hands) in front of a signer-specific
    background. Each gloss is a sign = (handshape sprite, location in signing space, movement path),
    optionally two-handed (the non-dominant hand mirrors it). Consecutive signs are joined by
    co-articulation frames that interpolate the hand poses; ``__ON__``/``__OFF__`` are rest poses
    (hands down). Frames are BGR when decoded with OpenCV.

    Determinism: every random choice derives from ``cfg.seed`` through per-(seed, split, index)
    streams, so nothing depends on ``workers``. The rendered frames (``rendered_sha256``: the sha256 of
    a sample's frames as H x W x 3 uint8 BGR arrays, row-major, in order, before encoding), the CSVs and
    ``synthsign.json`` less ``video.encoder`` are identical under every OpenCV/numpy build measured
    (README "Reproducibility"). The mp4 bytes, and so the decoded frames, are identical with one OpenCV
    build only (``video.encoder``): the encoder differs between builds. (PNG frames decode to the rendered
    frames under every build; only their compressed bytes may differ.) ``workers > 1`` renders in a
    spawned process pool, so a script that calls it needs the usual ``if __name__ == "__main__":`` guard.
    """
    if not isinstance(cfg, SynthConfig):
        raise TypeError(f"cfg must be a SynthConfig, got {type(cfg).__name__}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; allowed: an integer >= 1")
    if getattr(mp.current_process(), "_inheriting", False):
        # a spawned worker is importing a script that calls generate() at top level: stop before
        # _clear_outputs() deletes the corpus the parent is writing
        raise RuntimeError("generate() called while a worker process imports the main module; call it under "
                           "`if __name__ == \"__main__\":`")
    t0 = time.perf_counter()
    out_root = Path(out_root)
    corpus = build_corpus(cfg)
    signs, signers, plans = corpus["signs"], corpus["signers"], corpus["plans"]
    _clear_outputs(out_root)
    features = out_root / PHOENIX_FEATURES
    for split in SPLITS:
        (features / split).mkdir(parents=True, exist_ok=True)
    manual = out_root / "annotations" / "manual"
    manual.mkdir(parents=True, exist_ok=True)

    tasks = [p for split in SPLITS for p in plans[split]]
    shared = {"cfg": cfg, "signs": {s.gloss: s for s in signs}, "signers": signers, "features": str(features)}
    written: dict[str, int] = {}
    digests: dict[str, str] = {}
    bar = tqdm(total=len(tasks), desc="SynthSign", unit="video", disable=not progress)
    try:
        if workers == 1 or len(tasks) <= 1:
            _SHARED.clear()
            _SHARED.update(shared)
            for plan in tasks:
                vid, n, digest = _render_task(plan)
                written[vid], digests[vid] = n, digest
                bar.update()
        else:
            # spawn, not fork: a child forked after this process used OpenCV (its thread pool, FFmpeg
            # threads) can deadlock on an inherited lock, as seen here with fork. An executor, not a
            # Pool: a worker that dies makes it fail instead of being respawned forever.
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker, initargs=(shared,)) as pool:
                futures = [pool.submit(_render_task, plan) for plan in tasks]
                for future in as_completed(futures):
                    vid, n, digest = future.result()
                    written[vid], digests[vid] = n, digest
                    bar.update()
    except BrokenProcessPool as exc:
        raise RuntimeError("a SynthSign render worker died; if generate() is called from a script, call it "
                           "under `if __name__ == \"__main__\":` (workers are spawned and import the script)") from exc
    finally:
        bar.close()
        _SHARED.clear()
    wrong = [p.id for p in tasks if written.get(p.id) != p.frames]
    if wrong:
        raise RuntimeError(f"{len(wrong)} videos have a frame count other than planned (first: {wrong[0]})")

    for split in SPLITS:
        _write_corpus_csv(manual / f"{split}.corpus.csv", plans[split], signers, cfg.layout)
    stats = {split: _split_stats(plans[split], signers) for split in SPLITS}
    names = [s.gloss for s in signs]
    config = asdict(cfg)
    if cfg.layout == "mp4":
        del config["layout"]  # the default: synthsign.json stays byte-identical to that of earlier versions
        video = {"width": cfg.width, "height": cfg.height, "fps": cfg.fps, "fourcc": FOURCC,
                 "features": PHOENIX_FEATURES.as_posix(), "encoder": encoder_build()}
    else:
        video = {"width": cfg.width, "height": cfg.height, "fps": cfg.fps, "layout": "png",
                 "features": PHOENIX_FEATURES.as_posix(),
                 "frames": "<split>/<id>/1/" + PHOENIX_FRAME_NAME.replace("{video}", "<video>").replace(
                     "{frame:06d}", "<frame:06d>"),
                 "encoder": f"OpenCV {cv2.__version__} PNG (lossless: decoded frames equal the rendered frames)"}
    meta = {
        "format": "synthsign",
        "version": FORMAT_VERSION,
        "config": config,
        "video": video,
        "inventory": {"handshapes": list(HANDSHAPES), "locations": list(LOCATIONS), "movements": list(MOVEMENTS)},
        "rest_glosses": list(REST_GLOSSES),
        "vocabulary": [s.to_json() for s in signs],
        "minimal_pairs": minimal_pairs(signs, corpus["constructed"]),
        "shared_definitions": corpus["shared"],
        "grammar": corpus["grammar"].to_json(names) if corpus["grammar"] is not None else None,
        "source": corpus["source"],
        "signers": [s.to_json() for s in signers],
        "held_out_signers": [s.name for s in signers if s.held_out],
        "splits": stats,
        "samples": {split: [{"id": p.id, "signer": signers[p.signer].name, "frames": p.frames, "tempo": p.tempo,
                             "rendered_sha256": digests[p.id]} for p in plans[split]] for split in SPLITS},
    }
    (out_root / METADATA).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    all_frames = [p.frames for p in tasks]
    return {
        "out_root": str(out_root),
        "vocab_size": len(signs),
        "sentences": sum(s["sentences"] for s in stats.values()),
        "frames": int(sum(all_frames)),
        "mean_frames": round(float(np.mean(all_frames)), 3),
        "min_frames": int(min(all_frames)),
        "max_frames": int(max(all_frames)),
        **{f"{split}_sentences": stats[split]["sentences"] for split in SPLITS},
        **{f"{split}_frames": stats[split]["frames"] for split in SPLITS},
        "minimal_pairs": len(meta["minimal_pairs"]),
        "held_out_signers": meta["held_out_signers"],
        "layout": cfg.layout,
        "workers": workers,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def read_metadata(root: Path | str) -> dict[str, Any]:
    """The ``synthsign.json`` of a rendered corpus."""
    return json.loads((Path(root) / METADATA).read_text(encoding="utf-8"))
