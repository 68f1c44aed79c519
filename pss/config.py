"""The experiment config: composes the components' own config dataclasses (code_examples.md P4).

A config is built from, in order: the dataclass defaults, a YAML preset from ``pss/configs/``
(``demo``, ``paper``, ``tiny``) or a YAML file, then dotted overrides (``--set train.steps=200``).
Unknown keys and mistyped values are errors with a suggestion. The resolved config (every default
filled in, including the method's own parameters) is saved with every run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pss.configbase import apply_overrides_to, deep_update, from_dict, to_dict
from pss.errors import ConfigError
from pss.models.segmenter import ModelConfig

PRESET_DIR = Path(__file__).parent / "configs"
TargetSet = Literal["personal", "mix_all", "mix_sample"]


@dataclass(frozen=True)
class Bounds:
    """The allowed range of one number of the config (checked by the config, so the CLI and the app's form say
    the same thing; the form also shows it)."""

    name: str
    minimum: float
    maximum: float
    why: str = ""

    def check(self, value: float) -> None:
        """ConfigError naming the range unless ``minimum <= value <= maximum``."""
        if not self.minimum <= value <= self.maximum:
            why = f" ({self.why})" if self.why else ""
            raise ConfigError(f"{self.name} must be between {show_number(self.minimum)} and "
                              f"{show_number(self.maximum)}, got {show_number(value)}{why}")


def show_number(value: float) -> str:
    """Whole numbers in full (``4294967295``, not ``4.29e+09``), others as ``%g``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# Upper bounds far above any sensible run, below what breaks later (SQLite INTEGER, numpy's 32-bit seed).
STEPS = Bounds("train.steps", 1, 1_000_000)
BATCH_SIZE = Bounds("train.batch_size", 1, 1024, "images per batch")
SEED = Bounds("train.seed", 0, 2 ** 32 - 1, "numpy seeds are 32-bit")
LR = Bounds("train.lr", 1e-12, 10.0)
K = Bounds("grouping.k", 1, 10_000, "k-means groups per user; capped at a quarter of the user's images")
ANNOTATED_WEIGHT = Bounds("train.annotated_weight", 0.0, 1e6, "weight of the CE on the user's annotated training "
                          "images; 0 = not used")


@dataclass
class DataConfig:
    """Where the data is and how it is cut.

    root: a data root holding ``VOC2012/`` (source) and ``personal/`` (users), as ``pss demo`` writes it.
    target: the paper's Table 5 — ``personal`` (the user's own images), ``mix_all`` (every user's images),
        ``mix_sample`` (a random sample of ``mix_all`` as large as the user's collection).
    crop: training crop side (official 320; the demo uses 128 on CPU).
    eval_short_side: evaluation resizes each image so its short side is this (official 480), then predictions
        are upsampled back to the original size for the metrics.
    source_groups: k-means groups over the source images for group batches (official: 500 over VOC); 0 = plain
        shuffled source batches (each batch is then one attention group of unrelated images). The demo uses 0:
        its source groups are nearly single-class, and one-group batches at the demo's short, high-LR schedule
        pull the model towards one class per step until it predicts only background (README, issue notes).
    voc_val_list: the source's held-out split, scored during and after every run that trains on the source
        (``train.source_val_every``); None = ``ImageSets/Segmentation/val.txt`` under the VOC root when present
        (VOC2012 val on real data, the demo's held-out ids), "" = no source validation. Its images are removed
        from the source training list, so the source val never overlaps what the model trains on.
    """

    root: str = "data"
    voc_root: str | None = None
    voc_list: str | None = None
    personal_root: str | None = None
    user: str = "id1"
    target: TargetSet = "personal"
    crop: int = 128
    eval_short_side: int = 160
    source_groups: int = 40
    num_workers: int = 0
    voc_val_list: str | None = None

    def voc_path(self) -> Path:
        return Path(self.voc_root) if self.voc_root else Path(self.root) / "VOC2012"

    def personal_path(self) -> Path:
        return Path(self.personal_root) if self.personal_root else Path(self.root) / "personal"


@dataclass
class GroupingConfig:
    """Per-user k-means groups of ImageNet features (paper §4.2: K = 80).

    k_rule: ``fixed`` = K is ``k``; ``silhouette`` = per user, the K of ``k_grid`` whose k-means groups have the
        highest silhouette on the grouping features (label-free; Table 4 "auto", ``pss.grouping.auto_k``).
    random: groups of the k-means sizes whose members are drawn at random (seeded by ``seed``): the control for
        "the k-means groups carry information" (Table 3).
    """

    k: int = 80
    seed: int = 0
    feature_model: str = "lite0"
    k_rule: Literal["fixed", "silhouette"] = "fixed"
    k_grid: tuple[int, ...] = (2, 3, 5, 8, 12, 20, 35, 80)
    random: bool = False

    def __post_init__(self) -> None:
        K.check(self.k)


@dataclass
class TrainConfig:
    """Optimisation. Defaults follow the released PSS code (methods.md §1.3, §14): SGD lr 2.5e-3, momentum 0.9,
    weight decay 5e-4, one parameter group, poly power 0.9, batch 8 — the paper text says lr 2.5e-4 / wd 1e-4,
    but the released models were trained with the code's values, so we keep those.

    init_from: a run id (in the same workspace) or a checkpoint path whose model weights start this run
        (e.g. one shared No-DA model for every adaptation run, as MaxSquare's recipe pretrains on source).
    amp: ``auto`` = bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), else fp32; ``off``;
        ``bf16``. channels_last: ``auto`` = on (CUDA and CPU alike: measured faster on both, README "Performance").
    eval_every: score the user's labelled images every this many steps (0: only at the end). Only a curve to
        look at: the final checkpoint is the one scored and kept, never the best of this curve (that would
        select on the user's labels).
    source_val_every: score the source's held-out split (``data.voc_val_list``) every this many steps (0: only
        at the end); the ``source_val`` events of ``metrics.jsonl`` are the curve No-DA lengths are chosen from.
    sync_bn: in a multi-process run (``torchrun``, ``pss.engine.distributed``) compute BatchNorm statistics over
        the global batch (SyncBatchNorm, CUDA only) instead of per process as the released code's DataParallel
        did; no effect on a single process. ``batch_size`` is always the global batch.
    annotated_weight: weight ``w`` of the supervised loss on the user's images annotated for training
        (``annotated.txt``, ``UserCollection.annotated_train``; never an evaluation image): when > 0 every step
        also draws a batch of them (source crop and augmentation) and adds the named loss
        ``annotated = w · CE(logits, mask)`` (pixels 255 ignored) to the method's losses, for every method
        (``Method.annotated_losses``). 0 (default): no such batch, the run is exactly as without annotations.
        Must be >= 0; > 0 needs at least one annotated image.
    """

    steps: int = 300
    batch_size: int = 8
    lr: float = 2.5e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_mult: float = 1.0
    poly_power: float = 0.9
    seed: int = 1234
    eval_every: int = 0
    source_val_every: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    init_from: str | None = None
    amp: Literal["auto", "off", "bf16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    sync_bn: bool = False
    annotated_weight: float = 0.0

    def __post_init__(self) -> None:
        for bounds, value in ((STEPS, self.steps), (BATCH_SIZE, self.batch_size), (SEED, self.seed), (LR, self.lr),
                              (ANNOTATED_WEIGHT, self.annotated_weight)):
            bounds.check(value)
        if self.eval_every < 0 or self.source_val_every < 0:
            raise ConfigError("train.eval_every and train.source_val_every must be >= 0 (0 = only at the end)")


@dataclass
class EvalConfig:
    batch_size: int = 8
    save_predictions: bool = True


@dataclass
class ExperimentConfig:
    """Everything a run needs. ``method`` is ``{"name": ..., **the method's own parameters}``.

    ``tag`` is a free label that marks the runs of one experiment (``pss experiment`` tags its runs so that it
    can find and reuse them); it is saved with the config, so ``pss runs --search TAG`` lists them.
    """

    method: dict[str, Any] = field(default_factory=lambda: {"name": "pss"})
    tag: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    def method_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.method.items() if k != "name"}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset name (``demo``) or a YAML file path -> plain dict."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"config preset {name_or_path!r} not found; presets: {', '.join(list_presets())}, "
                          "or give the path of a YAML file")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return data


def resolve_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain config dict and fill every default, including the method's parameters and the
    method's default context mode (``group`` for PSS, ``none`` for the baselines) unless set explicitly."""
    from pss.methods import method_class  # late import: methods import models, which import this module's users

    raw = deep_update({}, raw)
    method = raw.get("method", {"name": "pss"})
    if isinstance(method, str):
        method = {"name": method}
    if not isinstance(method, dict) or "name" not in method:
        raise ConfigError("config section 'method' must be a mapping with a 'name' (e.g. method: {name: pss})")
    cls = method_class(method["name"])
    params = to_dict(from_dict(cls.Config, {k: v for k, v in method.items() if k != "name"}, where="method"))
    raw["method"] = {"name": method["name"], **params}
    context = raw.setdefault("model", {}).setdefault("context", {})
    if not isinstance(context, dict):
        raise ConfigError("config section 'model.context' must be a mapping")
    context.setdefault("mode", cls.default_context)
    return from_dict(ExperimentConfig, raw)


def build_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                 base: dict[str, Any] | None = None) -> ExperimentConfig:
    """Defaults <- preset <- ``base`` <- dotted overrides, validated."""
    from pss.methods import method_class

    raw: dict[str, Any] = load_preset(preset) if preset else {}
    if base:
        raw = deep_update(raw, base)
    final = apply_overrides_to(raw, overrides)
    # A preset's method parameters are defaults "where they apply": when the method is switched (--method),
    # keep only those the new method knows. Parameters given explicitly (base, overrides) stay strict.
    preset_method = raw.get("method")
    preset_method = preset_method if isinstance(preset_method, dict) else {}
    final_method = final.get("method")
    if isinstance(final_method, dict) and final_method.get("name") != preset_method.get("name"):
        known = {f.name for f in dataclasses.fields(method_class(str(final_method.get("name"))).Config)}
        explicit = apply_overrides_to({}, overrides).get("method", {})
        final["method"] = {k: v for k, v in final_method.items() if k == "name" or k in known or k in explicit}
    return resolve_config(final)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return to_dict(config)
