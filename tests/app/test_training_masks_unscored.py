"""An image annotated for TRAINING (in annotated.txt, not in val_all.txt) is not an evaluation image (issue 16,
item 3): Inspect and Compare show its mask captioned "annotated for training — not scored" and never score it;
an evaluation image keeps its scored ground truth."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from annotate_support import USER, annotate_workspace
from pss.api import annotate as ann
from pss.api.compare import compare_image, image_differences
from pss.api.users import MASK_SCORED, MASK_TRAINING, forget_users, read_user
from pss.data.labels import VOC_PALETTE


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """The trained workspace copy with one unlabelled image annotated (class 12, dog, in a box) for training."""
    trained = annotate_workspace(tmp_path_factory, "unscored")
    forget_users(trained.ws)
    collection = read_user(trained.ws, USER)
    name = next(r.name for r in collection.records if r.mask_path is None)
    t = ann.target(trained.ws, USER, name)
    mask = np.zeros((t.height, t.width), np.uint8)
    mask[t.height // 4: 3 * t.height // 4, t.width // 4: 3 * t.width // 4] = 12
    assert ann.submit(trained.ws, USER, name, mask).listed_for_training
    record = read_user(trained.ws, USER).record(name)
    assert record.mask_path is not None and not record.scored and record.eval_mask is None
    evaluation = read_user(trained.ws, USER).eval_set[0].name
    return trained, name, evaluation


def test_image_lists_caption_the_training_annotation(annotated) -> None:
    from pss_app.services.inspect import image_choices

    trained, name, evaluation = annotated
    choices = image_choices(trained.ws, USER)
    labels = dict((value, label) for label, value in choices)
    assert labels[name] == f"{name} · annotated for training — not scored"
    assert labels[evaluation] == f"{evaluation} · GT"
    kinds = [0 if label.endswith("· GT") else 1 if label.endswith("not scored") else 2 for label, _ in choices]
    assert kinds == sorted(kinds)  # evaluation images first, then training annotations, then unlabelled


def test_inspect_shows_the_mask_with_what_it_is(annotated) -> None:
    from pss_app.services.inspect import inspect_view

    trained, name, evaluation = annotated
    view = inspect_view(trained.ws, trained.pss_run, name)
    assert view.maps.mask_role == MASK_TRAINING and f"mask: **{MASK_TRAINING}**" in view.summary
    assert view.maps.mask is not None
    with Image.open(view.maps.mask) as im:
        drawn = np.asarray(im.convert("RGB"))
    assert drawn.shape[:2] == (view.display.height, view.display.width)
    centre = drawn[drawn.shape[0] // 2, drawn.shape[1] // 2]
    assert tuple(int(v) for v in centre) == tuple(VOC_PALETTE[12])  # the annotation at opacity 1: dog's colour
    scored = inspect_view(trained.ws, trained.pss_run, evaluation)
    assert scored.maps.mask_role == MASK_SCORED and scored.maps.mask is not None


def test_compare_shows_the_training_mask_but_never_scores_it(annotated) -> None:
    from pss_app.services.compare import compare_view

    trained, name, evaluation = annotated
    runs = [trained.pss_run, trained.source_run]
    comparison = compare_image(trained.ws, USER, name, runs)
    assert not comparison.labelled and comparison.mask_role == MASK_TRAINING
    assert all(p.fiou is None and p.miou is None and not p.errors for p in comparison.panels)
    with Image.open(comparison.figure) as im:
        figure_height = im.size[1]
    view = compare_view(trained.ws, USER, name, runs)
    assert f"mask {MASK_TRAINING}" in view.messages and "not scored" in view.messages
    assert view.scores["FIoU"].isna().all() and view.scores["MIoU"].isna().all()
    # the evaluation image is scored against its ground truth and gets the error-map row (a taller figure)
    scored = compare_image(trained.ws, USER, evaluation, runs)
    assert scored.labelled and scored.mask_role == MASK_SCORED
    assert all(p.fiou is not None and p.errors for p in scored.panels)
    with Image.open(scored.figure) as im:
        assert im.size[1] > figure_height
    # the per-image table of two runs lists evaluation images only
    table = image_differences(trained.ws, USER, trained.pss_run, trained.source_run)
    assert name not in set(table["image"]) and evaluation in set(table["image"])
