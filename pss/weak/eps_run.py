"""The runner of the tags pipelines ``eps_seg`` and ``eps_affinity`` (``pss.methods.eps_pipeline``; issue 17).

One run, its stages in order, each through the building blocks of ``pss.weak.pipeline`` and the one training loop:

=============  ==========================================================================================
stage          writes (under the run directory; the app's Inspect reads exactly this layout)
=============  ==========================================================================================
``saliency``   ``saliency/<name>.png``: our saliency model's maps, 8-bit grey 0-255 (empty folder when the
               user supplied ``SALImages/``, which are then used as they are)
``cam``        ``cam/<name>.npz``: the tagged classes' CAM scores (``classes`` 1..20, ``scores`` (K, H, W)
               float16 at the image's size); ``cam/<name>.png``: the EPS pseudo mask (VOC palette)
``cam_plain``  only with ``method.cam_plain``: the same for the plain CAM (no saliency loss), scored only
``affinity``   ``affinity/<name>.png``: affinity labels (255 = uncertain); ``affinity/model.pt``: the
               AffinityNet ``state_dict()`` (:func:`load_affinity_net`: built with
               :func:`affinity_model_config`, the run's model at ``net_output_stride``);
               ``affinity/refined/<name>.png``: the random-walk refined masks
``segmenter``  the run's checkpoints (``weak_seg`` on the source + the last mask stage's masks, from the
               run's starting model), ``pseudo/<name>.png`` (those masks as the segmenter saw them)
=============  ==========================================================================================

The report (merged into ``report.json``): ``stage_quality`` (FIoU/MIoU of the ``cam`` masks, for ``eps_affinity``
the ``refined`` ones, and ``cam_plain``'s when trained, against the user's evaluation masks: scored only, never
trained on: every training set here is the tagged images without their masks, the affinity labels or the pseudo
masks), ``stage_seconds``, ``saliency_source`` (``user`` | ``trained``), ``tags`` (tagged / untagged image names:
untagged images are left out of every stage and reported, never guessed) and ``mask_stage`` (whose masks the
segmenter trained on).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pss.config import ExperimentConfig
from pss.data.pss_layout import read_user
from pss.data.saliency import SALIENCY_FOLDER, check_saliency
from pss.data.tags import user_tag_report
from pss.engine.data import make_stream
from pss.engine.evaluate import EvalSettings
from pss.engine.pseudo import PseudoContext
from pss.engine.trainer import Trainer
from pss.errors import CheckpointError, ConfigError, DatasetError
from pss.fileio import atomic_path
from pss.methods.eps_pipeline import PLAIN_CAM, EPSPipeline, EPSPipelineConfig
from pss.methods.weak_seg import WeakMasksPseudoConfig, WeakSeg, WeakSegConfig
from pss.metrics import SegReport
from pss.models.affinity import AffinityNet, build_affinity_net, pair_indices
from pss.models.segmenter import ModelConfig, build_segmenter
from pss.status import Status
from pss.weak import pipeline
from pss.weak.quality import pseudo_mask_quality
from pss.weak.stages import PipelineOutput, StageContext, stage_config

AFFINITY_MODEL = "model.pt"
REFINED = "refined"


def affinity_model_config(config: ExperimentConfig) -> ModelConfig:
    """The model config ``<run>/affinity/model.pt`` was built with: the run's, at the method's
    ``net_output_stride`` (psa's stride 8 even when the segmenter runs at 16)."""
    stride = int(config.method_params().get("net_output_stride", EPSPipelineConfig.net_output_stride))
    return replace(config.model, output_stride=stride)


def load_affinity_net(run_dir: Path, config: ExperimentConfig, device: torch.device | None = None) -> AffinityNet:
    """The AffinityNet of an ``eps_affinity`` run (``<run>/affinity/model.pt``), in eval mode (the Inspect view's
    affinities of a clicked pixel). Raises ``CheckpointError`` when the run has none (yet)."""
    path = Path(run_dir) / "affinity" / AFFINITY_MODEL
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the run's affinity stage has not finished (or it is not an "
                              "eps_affinity run)")
    # the saved state_dict replaces every weight: no ImageNet weights to load first
    model = build_affinity_net(replace(affinity_model_config(config), pretrained=False, weights_path=None))
    try:
        model.load_state_dict(torch.load(path, map_location=device or "cpu", weights_only=True))
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load the AffinityNet weights ({exc}); the run's model config and the "
                              "saved weights differ: re-run the pipeline") from exc
    return model.to(device or torch.device("cpu")).eval()


def quality_entry(report: SegReport) -> dict[str, Any]:
    """The report's ``stage_quality`` entry of one mask stage (scores in [0, 1]; MIoU conventions as every run)."""
    return {"fiou": report.fiou, "miou": report.miou["pss"], "miou_present": report.miou["present"],
            "num_images": report.num_images}


def _quality_line(stage: str, entry: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value * 100:.2f}"
    return (f"{stage}: pseudo masks vs the {entry['num_images']} evaluation masks (scored only): MIoU "
            f"{pct(entry['miou'])}, FIoU {pct(entry['fiou'])}")


def check_affinity_crop(config: ExperimentConfig, radius: int, stride: int) -> None:
    """AffinityNet's pairs need an interior point on the crop's stride-8 grid: say so before any stage trains."""
    grid = config.data.crop // stride
    if pair_indices(grid, grid, radius, interior_only=True)[0].numel() == 0:
        raise ConfigError(f"data.crop={config.data.crop} gives a {grid}x{grid} feature grid, too small for "
                          f"AffinityNet's pairs at radius {radius} (output stride {stride}): use data.crop >= "
                          f"{stride * (2 * radius - 1)}")


def run_eps(ctx: StageContext) -> PipelineOutput:
    """Train the stages of ``ctx.method`` (``eps_seg`` or ``eps_affinity``) in order (module docstring)."""
    method = ctx.method
    if not isinstance(method, EPSPipeline):
        raise ConfigError(f"run_eps runs the tags pipelines, not {method.name!r}")
    cfg: EPSPipelineConfig = method.config
    config, device, seed = ctx.config, ctx.device, ctx.seed
    if config.data.target != "personal":  # the masks are the user's own, named by image: one user's collection
        raise ConfigError(f"{method.name} makes pseudo masks from one user's tags: set data.target=personal "
                          f"(got {config.data.target!r})")
    if "affinity" in method.stages:
        check_affinity_crop(config, cfg.radius, cfg.net_output_stride)
    collection = read_user(config.data.personal_path(), config.data.user)
    tags = user_tag_report(collection)
    ctx.log(f"tags: {tags.summary()}")
    if not tags.tagged:
        raise ConfigError(f"user {config.data.user} has no tagged image: add lines `name.jpg:cls,cls` to "
                          f"{collection.root / 'imgLabelList.txt'}")
    # the supervision is the tags; a tagged image's mask (evaluation ground truth) is stripped before any stage
    tagged = [replace(r, mask_path=None) for r in tags.tagged]
    report: dict[str, Any] = {"tags": {"tagged": [r.name for r in tags.tagged], "untagged": list(tags.untagged)},
                              "stage_quality": {}, "stage_seconds": {}}
    seconds: dict[str, float] = report["stage_seconds"]
    quality: dict[str, Any] = report["stage_quality"]

    # 1. saliency: the user's own maps when present, else our model trained on the source masks
    started = time.time()
    sal_dir = ctx.stage_dir("saliency")
    user_maps = collection.root / SALIENCY_FOLDER
    if user_maps.is_dir():
        problems = check_saliency(tagged)
        if problems:
            shown = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
            raise DatasetError(f"{len(problems)} bad saliency map(s) in {user_maps} ({shown}); fix them (`pss "
                               f"doctor {collection.root}` lists them all) or remove {user_maps} to train our "
                               "saliency model instead")
        saliency_folder = user_maps
        report["saliency_source"] = "user"
        ctx.log(f"saliency: the user's own maps in {user_maps}; the saliency stage is skipped")
    else:
        saliency_model = pipeline.train_saliency_model(stage_config(config, cfg.saliency_steps), ctx.data.source,
                                                       device, seed, hooks=ctx.hooks_for("saliency"))
        if ctx.stop_requested():
            return PipelineOutput(None)
        everyone = [replace(r, mask_path=None) for r in collection.records]  # Inspect shows untagged images too
        pipeline.write_saliency_maps(saliency_model, everyone, sal_dir, device, cfg.infer_short_side)
        saliency_folder = sal_dir
        report["saliency_source"] = "trained"
        ctx.log(f"saliency: our model ({cfg.saliency_steps} steps on the source masks), maps in {sal_dir}")
    seconds["saliency"] = time.time() - started

    # 2. EPS: the CAM classifier on the tags and saliency, its pseudo masks and scores
    started = time.time()
    cam_dir = ctx.stage_dir("cam")
    cam_model = pipeline.train_cam_model(stage_config(config, cfg.cam_steps, cfg.net_output_stride), tagged,
                                         saliency_folder, device, cfg.eps, seed, hooks=ctx.hooks_for("cam"))
    if ctx.stop_requested():
        return PipelineOutput(None)
    pipeline.write_cam_pseudo_masks(cam_model, tagged, cam_dir, cam_dir, device, short_side=cfg.infer_short_side)
    quality["cam"] = quality_entry(pseudo_mask_quality(cam_dir, collection.records))
    ctx.log(_quality_line("cam (EPS)", quality["cam"]))
    seconds["cam"] = time.time() - started
    masks = cam_dir

    # 2b. the plain CAM baseline (no saliency loss), scored only
    if cfg.cam_plain:
        started = time.time()
        plain_dir = ctx.work / PLAIN_CAM  # an optional stage: not among method.stages, so not ctx.stage_dir
        plain_model = pipeline.train_cam_model(stage_config(config, cfg.cam_steps, cfg.net_output_stride), tagged,
                                               saliency_folder, device, replace(cfg.eps, lambda_sal=0.0), seed,
                                               hooks=ctx.hooks_for(PLAIN_CAM))
        if ctx.stop_requested():
            return PipelineOutput(None)
        pipeline.write_cam_pseudo_masks(plain_model, tagged, plain_dir, plain_dir, device,
                                        short_side=cfg.infer_short_side)
        quality[PLAIN_CAM] = quality_entry(pseudo_mask_quality(plain_dir, collection.records))
        ctx.log(_quality_line("cam_plain (no saliency loss)", quality[PLAIN_CAM]))
        seconds[PLAIN_CAM] = time.time() - started

    # 3. AffinityNet on the confident regions, then the random walk
    if "affinity" in method.stages:
        started = time.time()
        aff_dir = ctx.stage_dir("affinity")
        labelled = pipeline.write_affinity_labels(tagged, cam_dir, aff_dir)
        aff_model = pipeline.train_affinity_model(stage_config(config, cfg.affinity_steps, cfg.net_output_stride),
                                                  labelled, device,
                                                  cfg.radius, seed, hooks=ctx.hooks_for("affinity"))
        if ctx.stop_requested():
            return PipelineOutput(None)
        with atomic_path(aff_dir / AFFINITY_MODEL) as tmp:
            torch.save(aff_model.state_dict(), tmp)
        masks = aff_dir / REFINED
        pipeline.write_refined_masks(aff_model, tagged, cam_dir, masks, device, radius=cfg.radius,
                                     short_side=cfg.infer_short_side)
        quality["refined"] = quality_entry(pseudo_mask_quality(masks, collection.records))
        ctx.log(_quality_line("affinity (random walk)", quality["refined"]))
        seconds["affinity"] = time.time() - started

    # 4. the segmenter on those masks (weak_seg) from the run's starting model, checkpointed as any run
    started = time.time()
    seg_method = WeakSeg(WeakSegConfig(cfg.lambda_seg_main, cfg.lambda_seg_aux,
                                       WeakMasksPseudoConfig(str(masks), cfg.pseudo.pseudo_every)),
                         config.model.num_classes)
    model = (ctx.segmenter or build_segmenter(config.model)).to(device)
    data = ctx.data
    labels = seg_method.pseudo_policy().build(model, PseudoContext(data.target, data.target_groups,
                                                                   EvalSettings.from_config(config, device),
                                                                   ctx.work / "pseudo"))
    ctx.log(f"segmenter: {len(labels.selected)} of {len(labels.mean_entropy)} user images have a mask of the "
            f"{method.mask_stage} stage to train on ({masks})")
    groups = {n: data.target_groups[n] for n in labels.selected} if data.target_groups else None
    streams = {"source": make_stream(data.source, data.source_groups, config, seed, fields=seg_method.fields),
               "pseudo": make_stream(labels.records, groups, config, seed + 2, fields=seg_method.fields)}
    try:
        trainer = Trainer(config, model, seg_method, streams, device,
                          ctx.hooks_for("segmenter"), checkpoint_path=ctx.checkpoint_path)
        result = trainer.run()
    finally:
        for stream in streams.values():
            stream.close()
    seconds["segmenter"] = time.time() - started
    if result.status == Status.CANCELLED or ctx.stop_requested():
        return PipelineOutput(None)
    report["mask_stage"] = "refined" if masks != cam_dir else "cam"
    return PipelineOutput(trainer.model, report, result.step)
