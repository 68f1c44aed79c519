"""The Annotate tab's engine side (``pss.api.annotate*``) on hand-made masks, a small demo and two tiny trained runs:
tags, brush strokes -> masks, drafts with undo/redo, submit / history / diff / revert / review, the eval-image rule,
doctor, pre-label, GrabCut, superpixels, the queue and the fine-tune request."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inspect_support import USER, trained_workspace
from pss.api import annotate as ann
from pss.api import annotate_tools as tools
from pss.api.users import forget_users, read_user
from pss.data.annotations import read_annotated, tag_mismatch
from pss.data.demo import DemoConfig, generate_demo
from pss.data.labels import class_index, read_label_png
from pss.data.validate import check_user
from pss.errors import DatasetError
from pss.workspace import Workspace


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    """A fresh demo workspace (1 user x 10 images) per test: these tests write masks and lists."""
    generate_demo(tmp_path / "ws" / "data", seed=1, config=DemoConfig(num_source=4, num_users=1, images_per_user=10))
    forget_users()
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory)


def _names(ws: Workspace, user: str = "id1") -> tuple[list[str], list[str]]:
    """(unlabelled names, evaluation names) of the user."""
    collection = read_user(ws, user)
    return ([r.name for r in collection.records if r.mask_path is None], [r.name for r in collection.eval_set])


# ---- brush strokes -> masks -------------------------------------------------------------------------------------

def _stroke(points, size, class_id) -> ann.Stroke:
    return ann.Stroke.parse({"points": points, "size": size, "class_id": class_id})


def test_a_stroke_covers_the_pixels_whose_centre_is_within_half_its_size() -> None:
    # a 3-pixel dot on pixel (2, 2)'s centre: the corner centres are sqrt(2) = 1.41 <= 1.5 away -> a 3x3 square
    dot = ann.stroke_footprint((5, 5), _stroke([[2.5, 2.5]], 3, 15))
    assert dot.astype(int).tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0],
                                        [0, 0, 0, 0, 0]]
    # a 5-pixel dot: radius 2.5, the four corners are sqrt(8) = 2.83 away, their neighbours sqrt(5) = 2.24 -> 21 px
    five = ann.stroke_footprint((5, 5), _stroke([[2.5, 2.5]], 5, 15))
    assert five.sum() == 21 and not five[0, 0] and five[0, 1] and five[2, 2]
    # a 1-pixel line along row 0 from column 0 to column 4 (centres 0.5 .. 4.5), round caps reach no further
    line = ann.stroke_footprint((3, 6), _stroke([[0.5, 0.5], [4.5, 0.5]], 1, 15))
    assert line.astype(int).tolist() == [[1, 1, 1, 1, 1, 0], [0] * 6, [0] * 6]
    # a diagonal of width 1 from pixel (0, 0) to (3, 3): the off-diagonal centres are 0.71 > 0.5 away
    diagonal = ann.stroke_footprint((4, 4), _stroke([[0.5, 0.5], [3.5, 3.5]], 1, 15))
    np.testing.assert_array_equal(diagonal, np.eye(4, dtype=bool))
    # points outside the image paint only what is inside
    assert ann.stroke_footprint((4, 4), _stroke([[-10, -10], [-5, -5]], 3, 15)).sum() == 0
    assert ann.stroke_footprint((4, 4), _stroke([[-1.0, 0.5], [1.5, 0.5]], 1, 15)).astype(int)[0].tolist() == [1, 1,
                                                                                                                0, 0]


def test_a_stroke_paints_its_class_and_the_eraser_puts_the_loaded_mask_back() -> None:
    cat, dog = class_index("cat"), class_index("dog")
    base = np.array([[cat, cat, cat, 255, 0]], np.uint8)  # what the editor was loaded with
    current = np.array([[dog, dog, cat, 255, 0]], np.uint8)  # after a dog stroke
    row = [[0.5, 0.5], [4.5, 0.5]]
    assert ann.paint_stroke(current, base, _stroke(row[:1], 1, 255)).tolist() == [[255, dog, cat, 255, 0]]
    assert ann.paint_stroke(current, base, _stroke(row, 1, 0)).tolist() == [[0, 0, 0, 0, 0]]  # background paints
    erased = ann.paint_stroke(current, base, _stroke([[0.5, 0.5], [1.5, 0.5]], 1, None))
    assert erased.tolist() == [[cat, cat, cat, 255, 0]]
    assert current.tolist() == [[dog, dog, cat, 255, 0]]  # a new array: the input is untouched


@pytest.mark.parametrize("bad, message", [
    ([[1, 1]], "an object"), ({"points": [], "size": 3, "class_id": 1}, "at least one point"),
    ({"points": [[1, "x"]], "size": 3, "class_id": 1}, "pairs"), ({"points": [[1, 1]], "size": 0, "class_id": 1},
                                                                   "size"),
    ({"points": [[1, float("nan")]], "size": 3, "class_id": 1}, "finite"),
    ({"points": [[1, 1]], "size": 3, "class_id": 21}, "class"), ({"points": [[1, 1, 1]], "size": 3}, "pairs")])
def test_a_bad_stroke_is_refused_with_what_is_wrong(bad, message) -> None:
    with pytest.raises(DatasetError, match=message):
        ann.Stroke.parse(bad)


def test_palette_png_round_trip(tmp_path) -> None:
    mask = np.random.default_rng(0).choice([0, 5, 15, 255], size=(7, 9)).astype(np.uint8)
    ann.write_mask(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png"), mask)


# ---- tags --------------------------------------------------------------------------------------------------------

def test_tag_write_replaces_one_line_and_keeps_every_other_byte(ws: Workspace) -> None:
    path = ws.personal / "id1" / "imgLabelList.txt"
    before = path.read_text().splitlines(keepends=True)
    name = read_user(ws, "id1").records[3].name
    assert ann.write_tags(ws, "id1", name, ["dog", "person"]) == ("dog", "person")
    after = path.read_text().splitlines(keepends=True)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and after[changed[0]] == f"{name}.jpg:dog,person\n"
    assert read_user(ws, "id1").record(name).tags == (class_index("dog"), class_index("person"))
    ann.write_tags(ws, "id1", name, [])
    assert f"{name}.jpg:UNKNOWN\n" in path.read_text()
    with pytest.raises(DatasetError, match="unknown class"):
        ann.write_tags(ws, "id1", name, ["unicorn"])


# ---- drafts, undo / redo ----------------------------------------------------------------------------------------

def test_draft_versions_undo_redo_and_restore_after_a_restart(ws: Workspace) -> None:
    name = _names(ws)[0][0]
    t = ann.target(ws, "id1", name)
    first = ann.blank_mask(t)
    first[:5, :5] = 8
    second = first.copy()
    second[10:20, 10:20] = 12
    ann.push_version(t, first)
    draft = ann.push_version(t, second)
    assert ann.push_version(t, second).versions == draft.versions  # the same mask again is not a new version
    assert len(draft.versions) == 3 and draft.sources[0] == "base"
    mask, _ = ann.step_draft(t, -1)
    np.testing.assert_array_equal(mask, first)
    mask, _ = ann.step_draft(t, +1)
    np.testing.assert_array_equal(mask, second)
    with pytest.raises(DatasetError, match="nothing to redo"):
        ann.step_draft(t, +1)
    ann.step_draft(t, -1)
    third = first.copy()
    third[0, :] = 15
    assert ann.push_version(t, third).can_redo is False  # a new edit after undo drops the redo branch
    # "restart": nothing in memory; the draft is read back from the workspace
    forget_users()
    assert ann.image_state(ws, "id1", name) == "draft"
    np.testing.assert_array_equal(ann.current_mask(ann.target(ws, "id1", name)), third)
    ann.discard_draft(ws, "id1", name)
    assert ann.read_draft(ws, "id1", name) is None and ann.image_state(ws, "id1", name) == "unlabelled"


# ---- submit, history, diff, revert, review ------------------------------------------------------------------------

def test_submit_lists_a_training_image_and_keeps_history_diff_and_revert(ws: Workspace) -> None:
    name = _names(ws)[0][0]
    t = ann.target(ws, "id1", name)
    v1 = ann.blank_mask(t)
    v1[:10] = 0
    v1[10:30, :40] = 12
    ann.push_version(t, v1, "prelabel:run-x")
    assert ann.image_state(ws, "id1", name) == "pre-labelled"
    done = ann.submit(ws, "id1", name, annotator="ann")
    assert done.listed_for_training and done.entry.source == "prelabel:run-x" and done.entry.version == 1
    assert name in read_annotated(ws.personal / "id1")
    assert name in {r.name for r in read_user(ws, "id1").annotated_train}
    np.testing.assert_array_equal(read_label_png(t.mask_path), v1)
    assert ann.read_draft(ws, "id1", name) is None and ann.image_state(ws, "id1", name) == "submitted"
    v2 = v1.copy()
    v2[10:30, :40] = 8
    ann.submit(ws, "id1", name, v2)
    diff = ann.diff_versions(ws, "id1", name, 2)
    assert diff.previous == 1 and diff.changed == 20 * 40 and diff.delta == {"cat": 800, "dog": -800}
    reverted = ann.revert(ws, "id1", name, 1)
    assert reverted.entry.version == 3 and reverted.entry.action == "revert"
    np.testing.assert_array_equal(read_label_png(t.mask_path), v1)
    ann.mark_reviewed(ws, "id1", name, "boss")
    assert ann.image_state(ws, "id1", name) == "reviewed"
    actions = [(e.version, e.action, e.annotator) for e in ann.read_history(ws, "id1", name)]
    assert actions == [(1, "submit", "ann"), (2, "submit", "local"), (3, "revert", "local"), (3, "review", "boss")]
    assert check_user(ws.personal, "id1") == []  # pss doctor stays clean on what was written


def test_submitting_an_evaluation_image_keeps_it_out_of_training_and_keeps_the_ground_truth(ws: Workspace) -> None:
    name = _names(ws)[1][0]
    t = ann.target(ws, "id1", name)
    assert t.evaluation
    original = read_label_png(t.mask_path)
    edited = original.copy()
    edited[:3] = 255
    done = ann.submit(ws, "id1", name, edited)
    assert not done.listed_for_training and "NOT listed for training" in done.message and done.entry.evaluation
    assert name not in read_annotated(ws.personal / "id1")
    assert name in {r.name for r in read_user(ws, "id1").eval_set}
    np.testing.assert_array_equal(ann.history_mask(ws, "id1", name, 0), original)  # the dataset's mask is v0
    assert check_user(ws.personal, "id1") == []


def test_masks_round_trip_on_an_exif_rotated_photo_and_doctor_stays_clean(ws: Workspace) -> None:
    user_dir = ws.personal / "id1"
    name = _names(ws)[0][0]
    path = user_dir / "JPEGImages" / f"{name}.jpg"
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed: the displayed image is H x W transposed
    rgb.save(path, exif=exif.tobytes())
    forget_users()
    t = ann.target(ws, "id1", name)
    assert (t.width, t.height) == (rgb.height, rgb.width)
    mask = ann.blank_mask(t)
    mask[: t.height // 2] = 15
    ann.submit(ws, "id1", name, mask)
    np.testing.assert_array_equal(read_label_png(t.mask_path), mask)
    assert check_user(ws.personal, "id1") == []


# ---- tools -------------------------------------------------------------------------------------------------------

def test_prelabel_keeps_only_tags_and_background_and_leaves_unsure_pixels_unlabelled() -> None:
    prob = np.zeros((21, 1, 4), np.float32)
    prob[12, 0] = [0.9, 0.1, 0.45, 0.0]  # dog: not a tag
    prob[8, 0] = [0.05, 0.8, 0.45, 0.3]  # cat: a tag
    prob[0, 0] = [0.05, 0.1, 0.1, 0.7]
    out = tools.restricted_prelabel(prob, (8,), threshold=0.6)
    # pixel 0: dog dropped, cat 0.5 vs bg 0.5 -> unsure; 1: cat .89; 2: cat .82; 3: bg .7
    assert out.tolist() == [[255, 8, 8, 0]]


def test_prelabel_from_a_run_uses_only_the_tags(trained) -> None:
    ws = trained.ws
    record = next(r for r in read_user(ws, USER).records if r.tags)
    t = ann.target(ws, USER, record.name)
    out = tools.prelabel(ws, trained.source_run, t, threshold=0.0)
    assert set(np.unique(out)) <= {0, *record.tags}
    strict = tools.prelabel(ws, trained.source_run, t, threshold=0.99)
    assert (strict == 255).sum() >= (out == 255).sum()


def test_grabcut_moves_the_mask_toward_the_clicks() -> None:
    image = np.full((60, 80, 3), 40, np.uint8)
    image[15:45, 20:60] = (220, 200, 30)  # a bright box on a dark background
    mask = np.full((60, 80), 255, np.uint8)
    out = tools.grabcut_refine(image, mask, 8, [tools.Click(40, 30, True), tools.Click(5, 5, False)])
    box = np.zeros((60, 80), bool)
    box[15:45, 20:60] = True
    assert (out[box] == 8).mean() > 0.9 and (out[~box] == 8).mean() < 0.05


def test_superpixel_fill_sets_one_region_to_the_class() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 32:] = 200
    regions = tools.superpixels(image, step=12)
    assert regions.min() >= 1 and len(np.unique(regions)) > 4
    mask = np.full((48, 64), 255, np.uint8)
    out = tools.fill_superpixel(mask, regions, 40, 20, 15)
    filled = out == 15
    assert filled[20, 40] and filled.sum() == (regions == regions[20, 40]).sum()
    assert not filled[:, :30].any()  # the region stops at the colour edge


def test_queue_holds_unlabelled_training_images_with_reasons(trained) -> None:
    ws = trained.ws
    items = tools.annotate_queue(ws, USER, trained.source_run, "uncertainty", k=4)
    collection = read_user(ws, USER)
    expected = {r.name for r in collection.records if r.mask_path is None}
    assert {i.name for i in items} == expected and all("mean entropy" in i.reason for i in items)
    random_items = tools.annotate_queue(ws, USER, None, "random")
    assert {i.name for i in random_items} == expected and random_items[0].reason == "random order (baseline)"


def test_tag_mismatch_names_missing_tags_and_untagged_predictions() -> None:
    prediction = np.zeros((10, 10), np.uint8)
    prediction[:5] = 12
    # the one rule (pss.data.annotations.tag_mismatch) the queue and the annotate-curve experiment share
    assert tag_mismatch((8,), prediction) == "tag cat not predicted; dog predicted, not tagged"
    assert tag_mismatch((12,), prediction) is None


def test_finetune_request_starts_from_the_run_with_the_annotated_stream(trained) -> None:
    request = tools.finetune_request(trained.ws, trained.pss_run)
    assert request.init_from == trained.pss_run and request.user == USER and request.method == "pss"
    assert "train.annotated_weight=1.0" in request.overrides()
    assert request.preset.endswith("config.yaml")
    # the request validates into the start run's own config, initialised from it, with the annotated stream on
    from pss.api.launch_form import validate_launch

    config = validate_launch(trained.ws, request)
    assert config.train.init_from == trained.pss_run and config.method_name == "pss"
    assert config.train.annotated_weight == 1.0


def test_editor_strokes_go_over_the_newest_version_and_a_retry_pushes_nothing(ws: Workspace) -> None:
    from pss_app.services import annotate as svc

    name = _names(ws)[1][0]  # an evaluation image: strokes go over its ground truth
    t = ann.target(ws, "id1", name)
    view = svc.image_view(ws, "id1", name)
    assert view.editor["key"] == view.key and (view.editor["width"], view.editor["height"]) == (t.width, t.height)
    assert view.editor["src"].startswith("data:image/png;base64,")
    person, dog = class_index("person"), class_index("dog")
    # size 3 = radius 1.5 around the centre line and its end points: rows 5-7, columns 5-29 exactly (the cap corner
    # centres (5.5, 5.5) are sqrt(2) = 1.41 from (6.5, 6.5); column 4 is 2 away)
    one = {"points": [[6.5, 6.5], [28.5, 6.5]], "size": 3, "class_id": person}
    two = {"points": [[6.5, 21.5], [28.5, 21.5]], "size": 3, "class_id": dog}
    assert svc.save_stroke(ws, "id1", name, view.key, one).pushed
    assert svc.save_stroke(ws, "id1", name, view.key, two).pushed
    assert not svc.save_stroke(ws, "id1", name, view.key, two).pushed  # a retry of a stroke saved already
    expected = read_label_png(t.mask_path)
    ground_truth = expected.copy()
    expected[5:8, 5:30] = person
    expected[20:23, 5:30] = dog
    np.testing.assert_array_equal(ann.current_mask(t), expected)
    assert len(ann.read_draft(ws, "id1", name).versions) == 3  # the loaded mask + one version per stroke
    # the eraser over the first stroke: the ground truth the editor was loaded with comes back there
    assert svc.save_stroke(ws, "id1", name, view.key, {**one, "class_id": None}).pushed
    expected[5:8, 5:30] = ground_truth[5:8, 5:30]
    np.testing.assert_array_equal(ann.current_mask(t), expected)
    with pytest.raises(DatasetError, match="another image"):
        svc.save_stroke(ws, "id1", _names(ws)[0][0], view.key, one)
    # the page's server function never raises: a refusal comes back as its message
    answer = svc.stroke_answer(ws, {**one, "key": view.key, "size": -1})
    assert answer == {"ok": False, "pushed": False, "message": answer["message"]} and "size" in answer["message"]
    assert svc.stroke_answer(ws, {"points": []})["message"].startswith("⚠ stroke not saved: the editor holds no")
    assert svc.stroke_answer(ws, {**two, "key": view.key, "class_id": person})["pushed"]
