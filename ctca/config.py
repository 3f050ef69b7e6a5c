"""Typed, validated sections of ``params.yaml``: one frozen dataclass per section.

Unknown keys, missing keys, wrong types and out-of-range values are refused with an error naming
the key (``tam.depth``) and what is allowed, so a typo in ``dvc exp run -S`` never runs silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ctca.data.corpus import MANIFEST_DELIMITERS
from ctca.data.synthetic import SynthConfig as _SYNTH  # the generator's defaults are the section's defaults


class ConfigError(ValueError):
    """A params key is unknown, missing or has an invalid value."""


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class DataConfig:
    """The corpus: ``dataset`` picks the reader (ctca.data.corpus.READERS), ``root`` its folder or manifest.

    Roots: synthetic -> data/synthsign; phoenix2014 -> phoenix-2014-multisigner/; phoenix2014t ->
    PHOENIX-2014-T/ (both hold annotations/ and features/); csl-daily -> the folder holding
    sentence_label/ and sentence/frames_512x512/; manifest -> the manifest **file**, a .csv or .tsv
    (columns id, path, signer, split, glosses; docs/data-formats.md#manifest-corpora). A .csv/.tsv root
    is refused for the folder datasets.
    """

    dataset: Literal["synthetic", "phoenix2014", "phoenix2014t", "csl-daily", "manifest"] = "synthetic"
    root: str = "data/synthsign"  # relative paths are relative to the project root
    max_bad_fraction: float = 0.05  # extract_frames fails when more videos than this are unreadable

    def validate(self, p: str) -> None:
        _check(0.0 <= self.max_bad_fraction <= 1.0, f"{p}.max_bad_fraction", self.max_bad_fraction, "0 <= x <= 1")
        _check(bool(self.root), f"{p}.root", self.root, "a non-empty path")
        is_manifest = Path(self.root).suffix.lower() in MANIFEST_DELIMITERS
        if self.dataset == "manifest":
            _check(is_manifest, f"{p}.root", self.root,
                   "the manifest file, a path ending in .csv or .tsv, when data.dataset=manifest")
        else:
            _check(not is_manifest, f"{p}.root", self.root,
                   f"the corpus folder when data.dataset={self.dataset} (a .csv/.tsv manifest needs "
                   "data.dataset=manifest)")


@dataclass(frozen=True)
class SynthConfigSection:
    """Generator knobs of the SynthSign corpus (the full list and meaning: ctca.data.synthetic.SynthConfig).

    ``from_corpus`` may name one sentence file (pooled, dealt to the splits at random) or a folder of
    train/dev/test split files (each split keeps its own sentences, in file order; ``n_*`` cap them and
    -1 takes all); ``layout`` is ``mp4`` (one video per sentence) or ``png`` (PHOENIX-2014 frame folders).
    """

    seed: int = _SYNTH.seed
    vocab_size: int = _SYNTH.vocab_size
    n_train: int = _SYNTH.n_train
    n_dev: int = _SYNTH.n_dev
    n_test: int = _SYNTH.n_test
    n_signers: int = _SYNTH.n_signers
    held_out_signers: int = _SYNTH.held_out_signers
    split_mode: Literal["multisigner", "signer_independent"] = _SYNTH.split_mode
    min_len: int = _SYNTH.min_len
    max_len: int = _SYNTH.max_len
    rest_prob: float = _SYNTH.rest_prob
    sign_frames: int = _SYNTH.sign_frames
    transition_frames: int = _SYNTH.transition_frames
    noise: float = _SYNTH.noise
    signer_variation: float = _SYNTH.signer_variation
    from_corpus: str = _SYNTH.from_corpus
    layout: Literal["mp4", "png"] = _SYNTH.layout
    workers: int = 2

    def generator_config(self) -> _SYNTH:
        return _SYNTH(**{k: v for k, v in to_dict(self).items() if k != "workers"})

    def validate(self, p: str) -> None:
        _check(self.workers >= 1, f"{p}.workers", self.workers, "an integer >= 1")
        # dev is needed for model selection; test for the report
        for k in ("n_dev", "n_test"):
            _check(getattr(self, k) >= 1 or getattr(self, k) == -1, f"{p}.{k}", getattr(self, k),
                   "an integer >= 1, or -1 (all the sentences of the split's file) when from_corpus names a "
                   "folder of split files")
        try:  # the generator's own checks, reported under this section's key names
            self.generator_config()
        except ValueError as exc:
            raise ConfigError(f"{p}.{exc}") from None


@dataclass(frozen=True)
class FramesConfig:
    size: int = 40  # frames resized to size x size (the reference code uses 256)
    workers: int = 2
    codec: Literal["png", "jpeg"] = "png"  # how extract_frames stores frames in its shards (png: lossless)
    quality: int = 90  # codec=jpeg: JPEG quality
    store: Literal["raw", "encoded"] = "raw"  # clip store: raw decoded uint8, or an index into the frame shards

    def validate(self, p: str) -> None:
        _check(8 <= self.size <= 512, f"{p}.size", self.size, "8 <= size <= 512")
        _check(self.workers >= 1, f"{p}.workers", self.workers, "an integer >= 1")
        _check(1 <= self.quality <= 100, f"{p}.quality", self.quality, "an integer in 1..100")


@dataclass(frozen=True)
class LoaderConfig:
    crop: int = 32  # random crop in training, center crop in evaluation (the reference: 224 of 256)
    flip: float = 0.5
    temporal_rescale: float = 0.2
    min_frames: int = 16
    max_frames: int = 230
    batch_size: int = 8
    num_workers: int = 0

    def validate(self, p: str) -> None:
        _check(self.crop >= 8, f"{p}.crop", self.crop, "an integer >= 8 and <= frames.size")
        _check(0.0 <= self.flip <= 1.0, f"{p}.flip", self.flip, "0 <= x <= 1")
        _check(0.0 <= self.temporal_rescale < 1.0, f"{p}.temporal_rescale", self.temporal_rescale, "0 <= x < 1")
        _check(1 <= self.min_frames <= self.max_frames, f"{p}.min_frames", self.min_frames,
               f"1 <= x <= {p}.max_frames")
        _check(self.batch_size >= 1, f"{p}.batch_size", self.batch_size, "an integer >= 1")
        _check(self.num_workers >= 0, f"{p}.num_workers", self.num_workers, "an integer >= 0")


@dataclass(frozen=True)
class SpmConfig:
    """Spatial perception module (SPM) and its pretraining stage."""

    arch: Literal["compact", "resnet18"] = "compact"
    channels: tuple[int, ...] = (16, 32, 64, 64)  # compact CNN only
    pretrained: str = ""  # resnet18: a local torchvision-format state dict (ImageNet weights); "" = random init
    pretrain_epochs: int = 3
    pretrain_depth: int = 2  # a shallow TAM trains the SPM more thoroughly (CTCA's empirical finding)
    pretrain_lr: float = 1e-3

    def validate(self, p: str) -> None:
        _check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), f"{p}.channels", self.channels,
               "a non-empty list of positive integers")
        _check(self.pretrain_epochs >= 0, f"{p}.pretrain_epochs", self.pretrain_epochs,
               "an integer >= 0 (0 = no pretraining)")
        _check(1 <= self.pretrain_depth <= 8, f"{p}.pretrain_depth", self.pretrain_depth, "1 <= x <= 8")
        _check(self.pretrain_lr > 0, f"{p}.pretrain_lr", self.pretrain_lr, "> 0")


@dataclass(frozen=True)
class TamConfig:
    """Temporal aggregation module (TAM). ``depth`` is the chain depth, see ctca.models.tam."""

    depth: int = 4
    hidden: int = 256
    dropout: float = 0.3
    mask_padding: bool = False  # padding out of the K5 blocks' BatchNorm statistics (the VAC code: in them)

    def validate(self, p: str) -> None:
        _check(1 <= self.depth <= 8, f"{p}.depth", self.depth, "1 <= depth <= 8 (4 = VAC's K5-P2-K5-P2 + 2 BiLSTM)")
        _check(self.hidden >= 2 and self.hidden % 2 == 0, f"{p}.hidden", self.hidden, "an even integer >= 2")
        _check(0.0 <= self.dropout < 1.0, f"{p}.dropout", self.dropout, "0 <= x < 1")


@dataclass(frozen=True)
class ModelConfig:
    """The training method: a name in the registry of ``ctca.methods`` (docs/methods.md)."""

    method: str = "baseline"

    def validate(self, p: str) -> None:
        from ctca.methods import method_names

        _check(self.method in method_names(), f"{p}.method", self.method, ", ".join(map(repr, method_names())))


@dataclass(frozen=True)
class VacConfig:
    """VAC's visual alignment (VA) distillation (docs/methods.md#vac)."""

    tau: float = 8.0
    mask_padding: bool = False  # VAC averages the KL over padded frames too; true = valid frames only

    def validate(self, p: str) -> None:
        _check(self.tau > 0, f"{p}.tau", self.tau, "> 0")


@dataclass(frozen=True)
class SmkdConfig:
    """SMKD's three stages (docs/methods.md#three-stage-schedule), scaled to ``train.epochs``; GSBA is our reconstruction.

    Stage 1 (shared classifier, CTC on both heads) runs epochs [0, gsba_start); stage 2 adds the gloss
    segmentation loss from ``gsba_start`` to ``train.epochs``; stage 3 unties the classifiers for
    ``decouple_epochs`` extra epochs at the constant ``decouple_lr``.
    """

    weight_norm: bool = True  # NormLinear (unit-norm class columns, no bias) instead of Linear
    gsba_start: int = 6  # the paper: 30 of 100 epochs
    gsba_every: int = 2  # pseudo-labels recomputed every N epochs (the paper: 10)
    radius_every: int = 3  # the expansion radius grows by 1 every N epochs (the paper: 20)
    label_smoothing: float = 0.2
    unlabelled: Literal["blank", "ignore"] = "blank"  # frames no anchor reaches: supervised as blank, or ignored
    decouple_epochs: int = 2  # the paper: 10
    decouple_lr: float = 4e-5  # the paper: 4e-6 with a base lr of 1e-4

    def validate(self, p: str) -> None:
        _check(self.gsba_start >= 1, f"{p}.gsba_start", self.gsba_start, "an epoch >= 1 (stage 1 comes first)")
        for k in ("gsba_every", "radius_every"):
            _check(getattr(self, k) >= 1, f"{p}.{k}", getattr(self, k), "an integer >= 1")
        _check(0.0 <= self.label_smoothing < 1.0, f"{p}.label_smoothing", self.label_smoothing, "0 <= x < 1")
        _check(self.decouple_epochs >= 0, f"{p}.decouple_epochs", self.decouple_epochs, "an integer >= 0")
        _check(self.decouple_lr > 0, f"{p}.decouple_lr", self.decouple_lr, "> 0")


@dataclass(frozen=True)
class CtcaConfig:
    """The reconstructed CTCA network and CCKD loss choices : every one is a switch (docs/methods.md#ctca-switches)."""

    local_kernels: tuple[int, ...] = (3, 3, 3)  # local path F3-F3-F3 ("same" padding, no pooling)
    global_path: Literal["blstm", "dilated"] = "blstm"  # global path: BiLSTM, or dilated convolutions (Table 8)
    global_layers: int = 1  # global path: BiLSTM layers
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # global_path=dilated: one residual k=3 block per dilation
    # before both paths: nothing (full frame rate), MaxPool1d(2) once or twice, or shared conv blocks
    # K5-P2 once or twice (docs/methods.md#ctca-switches)
    downsample: Literal["none", "pool2", "pool4", "k5p2", "k5p2k5p2"] = "k5p2k5p2"
    mask_padding: bool = True  # padded frames out of the local path's BatchNorm statistics and convolutions
    classifier: Literal["normlinear", "linear"] = "normlinear"  # one classifier per path, of this type
    inference: Literal["global", "local"] = "global"  # the single branch kept at inference
    # Table 6's alternatives to L_l2g: the local features fused into the global classifier's input, so both
    # paths run at inference (docs/methods.md#ctca-switches)
    fusion: Literal["none", "concat", "add", "attention"] = "none"
    reduction: Literal["sample_sum", "frame_mean"] = "sample_sum"  # CCKD terms summed per video (as CTC), or frame means
    cckd_warmup: int = 0  # > 0: the CCKD weights ramp up linearly over this many first epochs
    proj_dim: int = 256  # projection heads of L_l2g
    tau_mi: float = 0.1
    exclude: int = 4  # L_l2g negatives exclude frames within this distance
    l2g_negatives: Literal["video", "batch"] = "video"  # L_l2g negatives: the same video only, or the whole batch
    l2g_mi: bool = True  # the I(.,.) term (Table 5 "A - I"): InfoNCE; false = its positive term alone
    g2l_mode: Literal["correlation", "posterior"] = "correlation"  # posterior = VAC-style logit KD fallback
    g2l_form: Literal["pairwise", "kl"] = "pairwise"  # correlation mode: ω-weighted squared differences, or a KL
    tau_kd: float = 8.0  # temperature of the posterior mode's logit distillation
    g2l_omega: bool = True  # the omega(.,.) weighting (Table 5 "D - omega"); false = uniform pair weights
    tau_omega: float = 0.1
    rc_target: Literal["cross", "spm"] = "cross"  # cross-context reconstruction, or of the SPM features
    cmd_target: Literal["features", "classifier"] = "features"  # L_cmd on the global features at aligned frames
    cmd_window: int = 2  # PPMI co-occurrence window of the gloss embeddings (linguistic prior)
    cmd_dim: int = 256
    cmd_tau: float = 0.1

    def validate(self, p: str) -> None:
        _check(len(self.local_kernels) >= 1 and all(k >= 1 and k % 2 == 1 for k in self.local_kernels),
               f"{p}.local_kernels", self.local_kernels, "a non-empty list of odd kernel sizes")
        _check(1 <= self.global_layers <= 6, f"{p}.global_layers", self.global_layers, "1 <= x <= 6")
        _check(len(self.dilations) >= 1 and all(d >= 1 for d in self.dilations), f"{p}.dilations",
               self.dilations, "a non-empty list of integers >= 1")
        for k in ("proj_dim", "cmd_dim", "cmd_window"):
            _check(getattr(self, k) >= 1, f"{p}.{k}", getattr(self, k), "an integer >= 1")
        _check(self.exclude >= 0, f"{p}.exclude", self.exclude, "an integer >= 0")
        _check(self.cckd_warmup >= 0, f"{p}.cckd_warmup", self.cckd_warmup, "an integer >= 0")
        _check(self.fusion == "none" or self.inference == "global", f"{p}.fusion", self.fusion,
               "'none' when ctca.inference is 'local' (fusion feeds the global classifier)")
        for k in ("tau_mi", "tau_omega", "cmd_tau", "tau_kd"):
            _check(getattr(self, k) > 0, f"{p}.{k}", getattr(self, k), "> 0")


@dataclass(frozen=True)
class LossWeights:
    """Every loss term's weight; each method reads its own (docs/methods.md)."""

    ctc_seq: float = 1.0  # baseline, vac, smkd: CTC of the sequence head
    ctc_conv: float = 1.0  # vac, smkd: CTC of the conv head
    ctc_global: float = 1.0  # ctca: CTC of the global path
    ctc_local: float = 1.0  # ctca: CTC of the local path
    va: float = 25.0  # vac: visual alignment
    # ctca: chosen from the gradient ratios at the SPM output (docs/methods.md#cckd-scale)
    l2g: float = 0.04
    g2l: float = 0.5
    rc: float = 0.25
    cmd: float = 0.08
    seg: float = 1.0  # SMKD gloss segmentation (label-smoothed CE on GSBA pseudo-labels)

    def validate(self, p: str) -> None:
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name) >= 0, f"{p}.{f.name}", getattr(self, f.name), ">= 0")


@dataclass(frozen=True)
class LossConfig:
    """Loss toggles and weights; the CCKD terms (l2g, g2l, rc, cmd) act only with model.method=ctca."""

    l2g: bool = True
    g2l: bool = True
    rc: bool = True
    cmd: bool = True
    weights: LossWeights = field(default_factory=LossWeights)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (8, 11)
    gamma: float = 0.2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto = bf16 on CUDA, off on CPU
    threads: int = 0  # torch/OpenCV CPU threads; 0 = automatic: usable cores // ctca runs at once (ctca.cores)
    nproc: int = 1  # > 1: the train stage relaunches itself under torchrun (DDP, one process per GPU)
    checkpoint_steps: int = 0  # > 0: also checkpoint every N steps within an epoch (long epochs at paper scale)

    def validate(self, p: str) -> None:
        _check(self.checkpoint_steps >= 0, f"{p}.checkpoint_steps", self.checkpoint_steps, "an integer >= 0")
        _check(self.epochs >= 1, f"{p}.epochs", self.epochs, "an integer >= 1")
        _check(self.lr > 0, f"{p}.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, f"{p}.weight_decay", self.weight_decay, ">= 0")
        _check(list(self.milestones) == sorted(set(self.milestones)) and all(m >= 1 for m in self.milestones),
               f"{p}.milestones", self.milestones, "strictly increasing epochs >= 1")
        _check(0 < self.gamma <= 1, f"{p}.gamma", self.gamma, "0 < x <= 1")
        _check(self.threads >= 0, f"{p}.threads", self.threads, "an integer >= 0")
        _check(self.nproc >= 1, f"{p}.nproc", self.nproc, "an integer >= 1")


@dataclass(frozen=True)
class DecodeConfig:
    beam_width: int = 1  # 1 = greedy; > 1 = CTC prefix beam search

    def validate(self, p: str) -> None:
        _check(1 <= self.beam_width <= 256, f"{p}.beam_width", self.beam_width, "1 <= x <= 256")


@dataclass(frozen=True)
class EvaluateConfig:
    splits: tuple[str, ...] = ("dev", "test")
    batch_size: int = 16
    # auto = the dataset's official protocol (phoenix2014, phoenix2014t; none for synthetic, CSL-Daily and
    # manifest corpora)
    protocol: Literal["auto", "phoenix2014", "phoenix2014t", "vac-compat", "none"] = "auto"

    def validate(self, p: str) -> None:
        _check(len(self.splits) > 0 and set(self.splits) <= {"train", "dev", "test"}, f"{p}.splits", self.splits,
               "a non-empty subset of [train, dev, test]")
        _check(self.batch_size >= 1, f"{p}.batch_size", self.batch_size, "an integer >= 1")


@dataclass(frozen=True)
class IiwConfig:
    """Information in weights (ctca.iiw, docs/iiw.md), measured by the iiw stage.

    ``interval`` is the only key the train stage reads: it snapshots the weights every N epochs for the
    per-epoch curves. The other keys only change the measurement, so changing them never retrains.
    """

    interval: int = 1  # weights snapshotted (and IIW measured) every N training epochs; 0 = final model only
    subset: int = 32  # fixed, seeded training videos reused at every evaluation
    seed: int = 0
    tensor_filter: Literal["official", "all"] = "official"  # official: tensors named *weight* (no biases)
    official_batch: int = 2  # the reference code's estimator: K batches of this size, with replacement
    official_k: int = 10
    prior: Literal["init", "heldout"] = "init"  # θ0: the initial weights, or a copy trained on held-out dev clips
    prior_epochs: int = 2  # heldout: epochs of that copy's training (PIB recipe: 1-2, then discarded)

    def validate(self, p: str) -> None:
        _check(self.prior_epochs >= 1, f"{p}.prior_epochs", self.prior_epochs, "an integer >= 1")
        _check(self.interval >= 0, f"{p}.interval", self.interval, "an integer >= 0 (0 = off during training)")
        for k in ("subset", "official_batch", "official_k"):
            _check(getattr(self, k) >= 1, f"{p}.{k}", getattr(self, k), "an integer >= 1")


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs go, and the MLflow registered model the train stage adds each trained model to."""

    experiment: str = "ctca"
    registered_model: str = "{dataset}-{method}"  # {dataset} and {method} are filled in from data/model
    model_alias: str = "candidate"  # moved to every new version (a DVC experiment's name is an alias too)

    def validate(self, p: str) -> None:
        _check(bool(self.experiment), f"{p}.experiment", self.experiment, "a non-empty MLflow experiment name")
        try:
            name = self.registered_model.format(dataset="d", method="m")
        except (KeyError, IndexError, ValueError):
            name = ""
        _check(bool(name), f"{p}.registered_model", self.registered_model,
               "a non-empty name; may use {dataset} and {method}")
        _check(bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.model_alias)) and self.model_alias != "latest"
               and not re.fullmatch(r"[vV]\d+", self.model_alias), f"{p}.model_alias", self.model_alias,
               "letters, digits, '_' or '-', starting with a letter; not 'latest' or v<number> (MLflow reserves them)")

    def model_name(self, dataset: str, method: str) -> str:
        return self.registered_model.format(dataset=dataset, method=method)


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfigSection = field(default_factory=SynthConfigSection)
    frames: FramesConfig = field(default_factory=FramesConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    spm: SpmConfig = field(default_factory=SpmConfig)
    tam: TamConfig = field(default_factory=TamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vac: VacConfig = field(default_factory=VacConfig)
    smkd: SmkdConfig = field(default_factory=SmkdConfig)
    ctca: CtcaConfig = field(default_factory=CtcaConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    iiw: IiwConfig = field(default_factory=IiwConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self, p: str = "") -> None:
        _check(self.data.dataset != "synthetic" or self.data.root == "data/synthsign", "data.root", self.data.root,
               "'data/synthsign' when data.dataset=synthetic (the synthesize stage writes it)")
        _check(self.loader.crop <= self.frames.size, "loader.crop", self.loader.crop,
               f"<= frames.size ({self.frames.size})")
        from ctca.methods import method_class

        method_class(self.model.method).check_params(self)  # the method's own cross-section rules
        _check(self.spm.arch == "resnet18" or not self.spm.pretrained, "spm.pretrained", self.spm.pretrained,
               "'' unless spm.arch=resnet18")

    def section(self, name: str) -> dict:
        return to_dict(getattr(self, name))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses; lists become tuples."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 (PyYAML, and DVC writing `-S train.amp=off` into params.yaml) reads off/on/no/yes as
            # booleans: take the spelling this key allows
            spelled = [w for w in (("on", "yes", "true") if value else ("off", "no", "false")) if w in allowed]
            value = spelled[0] if spelled else value
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is invalid; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} is invalid; expected {_type_name(tp)}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation for {key}")  # keep sections simple
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is invalid; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # 4e-05: a float in YAML 1.2 and Python, a string to PyYAML (YAML 1.1)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} is invalid; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is invalid; expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'params.yaml'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"section '{prefix}'" if prefix else "params.yaml"
        keys = ", ".join(f"{prefix + '.' if prefix else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown key(s) {keys} in {where}; allowed keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}.{name}" if prefix else name)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def parse_params(data: dict) -> Params:
    """Validate a params mapping (as loaded from YAML); missing keys take the documented defaults."""
    return _build(Params, data, "")


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_params(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def fingerprint(*sections: Any) -> str:
    """A stable hash of config sections (a checkpoint resumes only under the same fingerprint)."""
    blob = json.dumps([to_dict(s) for s in sections], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
