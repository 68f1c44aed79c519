"""The embedded demo: a small synthetic source set and several users, in exactly the VOC and PSS layouts.

``generate_demo(out, seed)`` writes, deterministically for a seed (same bytes), a VOC-like labelled
source set (neutral light, balanced classes, varied backgrounds) and users ``id1..idN`` whose photos
have a style of their own (colour cast, exposure, noise, blur, backgrounds, class priors, object hue)
and 5-10 recurring scenes each. Objects are drawn from per-class shape families with per-class textures
(``demo_shapes``/``demo_painter``), so a source-trained model transfers, but measurably worse. About 5 %
of user photos are stored rotated with an EXIF Orientation tag, like phone photos; their masks follow
the displayed orientation. Nothing about scenes is written: real data has no such annotation.

Example::

    summary = generate_demo(Path("demo_data"), seed=0)
    make_contact_sheet(summary.root, Path("sheet.png"))
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from pss.data.demo_plan import UserPlan, image_shape, plan_user, source_ids, split_source
from pss.data.demo_scenes import SceneSpec, jitter_scene, render_scene, sample_scene
from pss.data.demo_sheet import make_contact_sheet
from pss.data.demo_styles import SOURCE_STYLE, STREAM_CLASS_ORDER, UserStyle, apply_camera, user_style
from pss.data.labels import CLASS_NAMES, IGNORE_INDEX, write_label_png
from pss.errors import ConfigError, DatasetError

__all__ = ["DemoConfig", "DemoSummary", "generate_demo", "hidden_user_labels", "make_contact_sheet",
           "read_demo_settings", "render_source_image", "render_user_image", "README_MARKER"]

README_MARKER = "pss demo data"
_EXIF_ORIENTATION = 0x0112
Progress = Callable[[float, str], None]


@dataclass
class DemoConfig:
    """Size of the demo. The defaults generate in well under a minute on two CPU cores."""

    num_source: int = 320  # VOC-layout labelled source images
    num_users: int = 4  # PSS-layout users id1..idN
    images_per_user: int = 140
    labelled_fraction: float = 0.3  # share of each user's images that get a SegmentationClass mask
    long_side: int = 192  # image long side in pixels (landscape and portrait aspect ratios)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        for name in ("num_source", "num_users", "images_per_user"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ConfigError(f"DemoConfig.labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if not 64 <= self.long_side <= 2048:
            raise ConfigError(f"DemoConfig.long_side must be in [64, 2048] pixels, got {self.long_side}")


@dataclass
class DemoSummary:
    """What ``generate_demo`` wrote."""

    root: Path
    source_images: int
    users: list[str]
    images_per_user: dict[str, int] = field(default_factory=dict)
    labelled_per_user: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _finish(scene_fn: Callable[[np.random.Generator, int], SceneSpec], rng: np.random.Generator,
            shape: tuple[int, int], style: UserStyle) -> tuple[np.ndarray, np.ndarray]:
    """Render and photograph a scene; re-sample (deterministically) if no object stayed visible."""
    h, w = shape
    for attempt in range(8):
        scene = scene_fn(rng, attempt)
        image, label = render_scene(scene, h, w, rng, hue_shift=style.hue_shift)
        if np.any((label > 0) & (label != IGNORE_INDEX)):
            break
    return apply_camera(image, style, rng), label


def render_source_image(seed: int, index: int, config: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Source image ``index``: (H, W, 3) uint8 RGB and (H, W) uint8 label. Primary classes cycle for balance."""
    rng = np.random.default_rng([seed, 0, index])
    order = np.random.default_rng([seed, STREAM_CLASS_ORDER]).permutation(len(CLASS_NAMES) - 1) + 1
    primary = CLASS_NAMES[int(order[index % len(order)])]
    shape = image_shape(rng, config.long_side, portrait_p=0.3, phone=False)
    return _finish(lambda r, k: sample_scene(r, SOURCE_STYLE, primary if k == 0 else None), rng, shape,
                   SOURCE_STYLE)


def render_user_image(seed: int, user_index: int, index: int, config: DemoConfig,
                      plan: UserPlan | None = None) -> tuple[np.ndarray, np.ndarray]:
    """User ``id<user_index>``'s image ``index`` as displayed (EXIF already applied): RGB uint8 and label."""
    plan = plan or plan_user(seed, user_index, config.images_per_user, config.labelled_fraction)
    style = user_style(user_index, seed)
    rng = np.random.default_rng([seed, user_index, index])
    shape = image_shape(rng, config.long_side, portrait_p=0.3, phone=True)
    if plan.orientation[index] in (6, 8) and shape[0] < shape[1]:
        shape = (shape[1], shape[0])  # a phone held upright stores landscape pixels + Orientation 6/8
    scene_index = plan.scene_of[index]

    def scene_fn(r: np.random.Generator, attempt: int) -> SceneSpec:
        if scene_index >= 0 and attempt == 0:
            return jitter_scene(plan.scenes[scene_index], r, style)
        return sample_scene(r, style)

    return _finish(scene_fn, rng, shape, style)


def _tags(label: np.ndarray) -> list[str]:
    present = np.unique(label)
    return [CLASS_NAMES[int(v)] for v in present if 0 < v < len(CLASS_NAMES)]


def _save_jpeg(path: Path, rgb: np.ndarray, quality: int, orientation: int = 1) -> None:
    """Save RGB as JPEG. With ``orientation`` != 1 store the pixels so that the EXIF-applied view is ``rgb``."""
    stored = {1: rgb, 3: np.rot90(rgb, 2), 6: np.rot90(rgb, 1), 8: np.rot90(rgb, -1)}[orientation]
    image = Image.fromarray(np.ascontiguousarray(stored))
    if orientation == 1:
        image.save(path, format="JPEG", quality=quality)
        return
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = orientation  # 6: rotate 90 CW to display, 8: 90 CCW, 3: 180
    image.save(path, format="JPEG", quality=quality, exif=exif.tobytes())


def _prepare_output(out: Path) -> None:
    """Refuse a non-empty folder that is not a previous demo; clear a previous demo's data."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; choose an empty or new folder for the demo data")
    if out.is_dir() and any(out.iterdir()):
        readme = out / "README.txt"
        previous = readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(README_MARKER)
        if not previous:
            raise DatasetError(f"{out} is not empty and does not hold a previous pss demo (no README.txt written by "
                               "`pss demo`); choose an empty or new folder so that nothing of yours is overwritten")
        for name in ("VOC2012", "personal"):
            if (out / name).exists():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def _write_readme(out: Path, seed: int, config: DemoConfig, complete: bool) -> None:
    users = "\n".join(f"  id{u}: {user_style(u, seed).name}" for u in range(1, config.num_users + 1))
    text = (f"{README_MARKER} (synthetic; written by `pss demo`, pss.data.demo.generate_demo)\n"
            f"seed: {seed}\nconfig: {config}\nstatus: {'complete' if complete else 'being written'}\n\n"
            "VOC2012/  labelled source set in the PASCAL VOC + SBD layout (JPEGImages, SegmentationClassAug,\n"
            "          list/train_aug.txt, ImageSets/Segmentation/val.txt = held-out ids)\n"
            "personal/ one folder per user in the PSS layout (JPEGImages, SegmentationClass for ~"
            f"{config.labelled_fraction:.0%} of images,\n          imgLabelList.txt, val_all.txt)\n\n"
            f"User styles:\n{users}\n\n"
            "Regenerating with `pss demo --out <this folder>` replaces VOC2012/ and personal/.\n")
    (out / "README.txt").write_text(text, encoding="utf-8")


def _write_source(out: Path, seed: int, config: DemoConfig, tick: Callable[[str], None]) -> int:
    voc = out / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClassAug", "list", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = source_ids(config.num_source)
    for index, image_id in enumerate(ids):
        rgb, label = render_source_image(seed, index, config)
        _save_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", rgb, SOURCE_STYLE.jpeg_quality)
        write_label_png(voc / "SegmentationClassAug" / f"{image_id}.png", label)
        tick(f"source image {index + 1}/{len(ids)}")
    train, val = split_source(seed, ids)
    (voc / "list" / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in train), encoding="utf-8")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in val), encoding="utf-8")
    return len(ids)


def _write_user(out: Path, seed: int, user_index: int, config: DemoConfig, tick: Callable[[str], None]) -> int:
    user = f"id{user_index}"
    folder = out / "personal" / user
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    plan = plan_user(seed, user_index, config.images_per_user, config.labelled_fraction)
    quality = user_style(user_index, seed).jpeg_quality
    tag_lines, val_lines = [], []
    for index, name in enumerate(plan.names):
        rgb, label = render_user_image(seed, user_index, index, config, plan)
        _save_jpeg(folder / "JPEGImages" / f"{name}.jpg", rgb, quality, plan.orientation[index])
        tag_lines.append(f"{name}.jpg:{','.join(_tags(label)) or 'UNKNOWN'}\n")
        if index in plan.labelled:
            write_label_png(folder / "SegmentationClass" / f"{name}.png", label)
            val_lines.append(f"/JPEGImages/{name}.jpg /SegmentationClass/{name}.png 0\n")
        tick(f"{user}: image {index + 1}/{len(plan.names)}")
    (folder / "imgLabelList.txt").write_text("".join(sorted(tag_lines)), encoding="utf-8")
    (folder / "val_all.txt").write_text("".join(sorted(val_lines)), encoding="utf-8")
    return len(val_lines)


def generate_demo(out: Path, seed: int = 0, config: DemoConfig | None = None,
                  progress: Progress | None = None) -> DemoSummary:
    """Write the demo data root at ``out`` (VOC2012/ + personal/id1..idN/ + README.txt) and return a summary.

    ``out`` must be empty, new, or a previous demo (which is replaced). The same seed and config give
    byte-identical files. ``progress(fraction, message)`` is called after every image.
    """
    config = config or DemoConfig()
    config.validate()
    out = Path(out)
    start = time.perf_counter()
    _prepare_output(out)
    _write_readme(out, seed, config, complete=False)
    total, done = config.num_source + config.num_users * config.images_per_user, 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / total, message)

    summary = DemoSummary(root=out, source_images=_write_source(out, seed, config, tick), users=[])
    for user_index in range(1, config.num_users + 1):
        user = f"id{user_index}"
        summary.users.append(user)
        summary.labelled_per_user[user] = _write_user(out, seed, user_index, config, tick)
        summary.images_per_user[user] = config.images_per_user
    _write_readme(out, seed, config, complete=True)
    summary.seconds = time.perf_counter() - start
    return summary


def read_demo_settings(root: Path) -> tuple[int, DemoConfig]:
    """(seed, config) a demo data root was written with, read back from its ``README.txt`` (``_write_readme``)."""
    readme = Path(root) / "README.txt"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    seed = re.search(r"^seed: (\d+)$", text, re.MULTILINE)
    config = re.search(r"^config: DemoConfig\((.*)\)$", text, re.MULTILINE)
    if not text.startswith(README_MARKER) or seed is None or config is None:
        raise DatasetError(f"{readme}: not a README written by `pss demo`; hidden masks exist only for the demo data")
    fields = {f.name: f.type for f in dataclasses.fields(DemoConfig)}
    values: dict[str, Any] = {}
    for key, value in re.findall(r"(\w+)=([^,]+)", config.group(1)):
        if key in fields:
            values[key] = float(value) if key == "labelled_fraction" else int(value)
    return int(seed.group(1)), DemoConfig(**values)


def hidden_user_labels(root: Path, user: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The ground-truth label maps of user ``user``'s images ``names`` (labelled or not) of the demo at ``root``,
    regenerated from the seed and config in its README: the generator draws every image's label with the image
    (``render_user_image``) and writes a mask only for the planned labelled ones, so the other masks are hidden, not
    absent. Nothing on disk changes; the images are not re-rendered into the data.

    Checked: the regenerated label of one stored mask must equal it, else ``DatasetError`` (the data was not written
    by this demo generator, or was edited). Shape: each label (H, W) uint8, as displayed (EXIF orientation applied).
    """
    from pss.data.image_io import load_mask

    match = re.fullmatch(r"id(\d+)", user)
    if match is None:
        raise DatasetError(f"{user!r} is not a demo user (id1, id2, ...)")
    seed, config = read_demo_settings(root)
    user_index = int(match.group(1))
    plan = plan_user(seed, user_index, config.images_per_user, config.labelled_fraction)
    index_of = {name: i for i, name in enumerate(plan.names)}
    unknown = [n for n in names if n not in index_of]
    if unknown:
        raise DatasetError(f"{', '.join(unknown[:5])}: not images of the demo's {user}; regenerate the demo "
                           f"(`pss demo --out {root}`)")
    check = plan.names[min(plan.labelled)]
    stored = Path(root) / "personal" / user / "SegmentationClass" / f"{check}.png"
    regenerated = render_user_image(seed, user_index, index_of[check], config, plan)[1]
    if not stored.is_file() or not np.array_equal(load_mask(stored, regenerated.shape), regenerated):
        raise DatasetError(f"{stored}: the stored mask differs from the one the demo generator draws for it; the "
                           "data is not this demo's (regenerate it with `pss demo`), so its hidden masks are unknown")
    return {name: render_user_image(seed, user_index, index_of[name], config, plan)[1] for name in names}
