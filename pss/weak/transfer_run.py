"""The runner of the ``transfer`` pipeline (``pss.methods.transfer``; issue 18): the L-Net / P-Net stages of
``pss.weak.transfer`` as one run of the run store.

Run directory (what the app's Inspect reads):

* ``strong_labels/<name>.png``: the split's labels of every labelled source image (weak-class pixels, or the whole
  mask under ``hide=image``, 255), what the training stages see;
* ``objectness/<name>.png``: L-Net's class-agnostic object map M of every split image, 8-bit grey (written when the
  ``objectness`` stage trained; at 0 % strong there is no M to write: the CAMs stand in for it);
* ``coarse/<name>.png``: L-Net's coarse label of every weak-class image (VOC palette, 255 = unknown);
* ``labels/<name>.png``: the P-Net training labels (the split's kept labels, the coarse labels where they are 255);
* ``checkpoints/``: the final P-Net, the run's model (``pss.runs.execute`` saves it), scored like any run's.

Report entries (merged into ``report.json``): ``split`` (which classes were strong and weak), ``coarse_quality``
(the coarse labels against the *full* source masks: evaluation only), ``source_val`` (as a one-loop run's, the
final model only), ``source_val_split`` and ``eval_split`` (mIoU on all / strong / weak classes of the source's
held-out split and of the user's evaluation images, ``pss.weak.split_report``), ``stages`` (what each stage did).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pss.data.labels import CLASS_NAMES
from pss.data.strong_weak import StrongWeakSplit, apply_split
from pss.engine.evaluate import EvalSettings, evaluate_records
from pss.engine.hooks import source_val_values
from pss.errors import ConfigError
from pss.methods.transfer import Transfer, TransferConfig
from pss.metrics import MIoUConvention, SegReport
from pss.weak.split_report import group_miou
from pss.weak.stages import PipelineOutput, StageContext, stage_config
from pss.weak.transfer import coarse_label_quality, train_cams, train_object_map, train_pnet, write_coarse_labels

STRONG_LABELS, LABELS = "strong_labels", "labels"  # run folders beside the stages' own (module docstring)


def _number(value: float) -> float | None:
    """JSON-safe: NaN (a group without classes) becomes None."""
    return None if math.isnan(value) else float(value)


def split_entry(split: StrongWeakSplit, cfg: TransferConfig) -> dict[str, Any]:
    """The report's ``split``: class ids (background 0 counts as strong), their names, the strong fraction of the
    object classes actually used, the seed that drew them (None when ``strong_classes`` listed them) and the
    images that needed coarse labels."""
    objects = len(CLASS_NAMES) - 1
    return {"strong": list(split.strong), "weak": list(split.weak),
            "strong_names": [CLASS_NAMES[c] for c in split.strong], "weak_names": [CLASS_NAMES[c] for c in split.weak],
            "fraction": (len(split.strong) - 1) / objects,
            "seed": None if cfg.strong_classes is not None else cfg.split_seed, "hide": split.policy,
            "weak_images": len(split.weak_images), "strong_images": len(split.strong_images)}


def group_entry(report: SegReport, strong: tuple[int, ...]) -> dict[str, Any]:
    """mIoU of all / strong / weak classes under both conventions (``pss``: every class of the group, absent = 0,
    the tables' convention; ``present``: classes with a non-zero union), from one confusion matrix."""
    entry: dict[str, Any] = {"num_images": report.num_images}
    for convention in (MIoUConvention.PSS, MIoUConvention.PRESENT):
        groups = group_miou(report, strong, convention)
        suffix = "" if convention == MIoUConvention.PSS else "_present"
        entry.update({f"all{suffix}": _number(groups.all), f"strong{suffix}": _number(groups.strong),
                      f"weak{suffix}": _number(groups.weak)})
    return entry


def run_transfer_pipeline(ctx: StageContext) -> PipelineOutput:
    """Split -> objectness -> CAMs -> coarse labels -> P-Net (module docstring); ``PipelineOutput(None)`` when the
    run was asked to stop between or during stages."""
    method = ctx.method
    if not isinstance(method, Transfer):
        raise TypeError(f"the transfer runner needs the transfer method, got {method.name!r}")
    cfg: TransferConfig = method.config
    config, device, seed = ctx.config, ctx.device, ctx.seed
    if config.train.init_from:  # each stage builds its own network; none of them would start from it
        raise ConfigError(f"method transfer trains every stage's network from the preset's initialisation "
                          f"(model.pretrained); train.init_from={config.train.init_from!r} would not be used: "
                          "leave it empty")
    steps = method.stage_steps(config.train.steps)
    split = apply_split(ctx.data.source, method.strong, ctx.work / STRONG_LABELS, cfg.hide)  # type: ignore[arg-type]
    ctx.log(f"split: strong {', '.join(CLASS_NAMES[c] for c in split.strong)}; weak "
            f"{', '.join(CLASS_NAMES[c] for c in split.weak) or 'none'}; {len(split.weak_images)} of "
            f"{len(split.records)} source images need coarse labels")
    stages: dict[str, Any] = {}

    object_model = None
    if "objectness" in steps:
        object_model = train_object_map(stage_config(config, steps["objectness"]), split, device, seed,
                                        hooks=ctx.hooks_for("objectness"))
        stages["objectness"] = {"steps": steps["objectness"]}
        if ctx.stop_requested():
            return PipelineOutput(None)
    else:
        stages["objectness"] = {"steps": 0, "note": "no strong object class: no object map; M = the largest "
                                "tag-restricted CAM score, and the CAMs train without saliency"}
        ctx.log(stages["objectness"]["note"])

    # writes objectness/<name>.png (M of every split image) before it trains, when there is an object model
    cam_model = train_cams(stage_config(config, steps["cam"]), split, object_model, ctx.work, device, seed=seed,
                           hooks=ctx.hooks_for("cam"))
    stages["cam"] = {"steps": steps["cam"], "saliency": object_model is not None}
    if ctx.stop_requested():
        return PipelineOutput(None)

    coarse = ctx.stage_dir("coarse")
    records = write_coarse_labels(split, cam_model, object_model, coarse, ctx.work / LABELS, device,
                                  scales=cfg.cam_scales, short_side=cfg.coarse_short_side)
    del cam_model, object_model  # the L-Net networks are done: free their memory before P-Net trains
    quality = coarse_label_quality(coarse, ctx.data.source, split.strong)
    coarse_quality = {**group_entry(quality.report, split.strong), "coverage": _number(quality.coverage)}
    stages["coarse"] = {"images": quality.report.num_images, "scales": list(cfg.cam_scales),
                        "short_side": cfg.coarse_short_side}
    ctx.log(f"coarse labels of {quality.report.num_images} weak-class images: mIoU {coarse_quality['all']:.3f} "
            f"(weak classes {coarse_quality['weak'] if coarse_quality['weak'] is not None else float('nan'):.3f}), "
            f"{quality.coverage:.0%} of the pixels decided")
    if ctx.stop_requested():
        return PipelineOutput(None)

    model = train_pnet(stage_config(config, steps["pnet"]), records, cfg, device, seed, hooks=ctx.hooks_for("pnet"))
    stages["pnet"] = {"steps": steps["pnet"], "lambda_adv": cfg.lambda_adv,
                      "row": "L-Net + P-Net" if cfg.lambda_adv > 0 else "L-Net only"}
    if ctx.stop_requested():
        return PipelineOutput(None)

    report: dict[str, Any] = {"split": split_entry(split, cfg), "coarse_quality": coarse_quality, "stages": stages}
    if ctx.data.source_val:
        settings = EvalSettings.from_config(config, device)
        source_val = evaluate_records(model, ctx.data.source_val, None, settings)[0]
        final = source_val_values(source_val)
        report["source_val"] = {**final, "curve": [{"step": steps["pnet"], **final}]}
        report["source_val_split"] = {**group_entry(source_val, split.strong), "confusion": source_val.confusion}

    def after_eval(evaluation: SegReport) -> dict[str, Any]:
        return {"eval_split": group_entry(evaluation, split.strong)}

    return PipelineOutput(model, report, steps["pnet"], after_eval=after_eval)


USER_INDEPENDENT = ("split", "coarse_quality", "source_val_split", "stages")
"""Report entries of a transfer run that do not depend on the user it was evaluated on."""


def evaluation_entries(trained: dict[str, Any]) -> tuple[dict[str, Any], Callable[[SegReport], dict[str, Any]] | None]:
    """For an evaluation-only run of a trained model on another user (``pss.experiments.reuse.evaluation_run``):
    the trained run's user-independent entries (``trained`` = its report; which classes were weak, ...) and the
    ``after_eval`` that splits the new user's mIoU by the same classes. Nothing for a run without a split."""
    split = trained.get("split")
    if not isinstance(split, dict) or not split.get("strong"):
        return {}, None
    strong = tuple(int(c) for c in split["strong"])

    def after_eval(evaluation: SegReport) -> dict[str, Any]:
        return {"eval_split": group_entry(evaluation, strong)}

    return {k: trained[k] for k in USER_INDEPENDENT if k in trained}, after_eval
