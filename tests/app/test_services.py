"""Service functions of the app, called directly (no server, no browser)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pss.api import ImageRecord, Workspace, open_workspace, read_user, thumbnail
from pss.errors import ConfigError, DatasetError
from pss_app.__main__ import main, parse_auth
from pss_app.services.gallery import (PAGE_SIZE, GalleryFilter, class_histogram, clamp_page, filter_records,
                                      gallery_page, group_names, page_of)
from pss_app.services.groups import (Selection, composition_figure, group_choices, parse_group, parse_selection,
                                     selected_names)
from pss_app.services.statistics import statistics_figures
from pss_app.services.viewer import fit_for_display, image_view, legend, overlay


def _record(name: str, tags: tuple[int, ...] = (), labelled: bool = False) -> ImageRecord:
    return ImageRecord(name, Path(f"/nowhere/{name}.jpg"), Path(f"/nowhere/{name}.png") if labelled else None, tags)


# ---------------------------------------------------------------- thumbnails

def test_thumbnail_is_cached_by_path_mtime_size_and_applies_exif(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    photo = tmp_path / "p.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the stored 400x200 image is shown rotated, 200 wide x 400 high
    Image.new("RGB", (400, 200), (200, 30, 30)).save(photo, exif=exif)
    first = thumbnail(ws, photo)
    assert first.is_relative_to(tmp_path / "cache" / "thumbs")
    with Image.open(first) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (80, 160)
    stamp = first.stat().st_mtime_ns
    assert thumbnail(ws, photo) == first and first.stat().st_mtime_ns == stamp  # warm: not rewritten
    time.sleep(0.01)
    Image.new("RGB", (300, 300), (0, 0, 255)).save(photo)  # edited photo: new key, new thumbnail
    second = thumbnail(ws, photo)
    assert second != first
    with Image.open(second) as thumb:
        assert thumb.size == (160, 160)


def test_thumbnail_of_a_corrupt_or_missing_image_raises_dataset_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DatasetError, match="bad.jpg"):
        thumbnail(ws, bad)
    with pytest.raises(DatasetError, match="missing.jpg"):
        thumbnail(ws, tmp_path / "missing.jpg")


# ---------------------------------------------------------------- gallery paging and filters

def test_filter_records_by_tag_mask_and_names() -> None:
    records = [_record("a", (8,), True), _record("b", (8, 12)), _record("c", (15,), True), _record("d")]
    assert [r.name for r in filter_records(records, GalleryFilter(tag="cat"))] == ["a", "b"]
    assert [r.name for r in filter_records(records, GalleryFilter(labelled="labelled"))] == ["a", "c"]
    assert [r.name for r in filter_records(records, GalleryFilter(labelled="unlabelled"))] == ["b", "d"]
    assert [r.name for r in filter_records(records, GalleryFilter(tag="cat", labelled="unlabelled"))] == ["b"]
    # names keep the selection's order, drop unknown names and duplicates
    assert [r.name for r in filter_records(records, GalleryFilter(names=("d", "x", "a", "d")))] == ["d", "a"]
    with pytest.raises(DatasetError, match="unknown tag"):
        filter_records(records, GalleryFilter(tag="unicorn"))
    with pytest.raises(DatasetError, match="labelled filter"):
        filter_records(records, GalleryFilter(labelled="maybe"))


@pytest.mark.parametrize("page, pages, expected", [(1, 3, 1), (3, 3, 3), (9, 3, 3), (0, 3, 1), (-2, 3, 1),
                                                   (None, 3, 1), ("x", 3, 1), (float("nan"), 3, 1), (2.0, 1, 1)])
def test_clamp_page(page, pages, expected) -> None:
    assert clamp_page(page, pages) == expected


def test_page_of_pages_48_at_a_time_and_marks_unreadable_images(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    (tmp_path / "img").mkdir()
    records = []
    for i in range(50):
        path = tmp_path / "img" / f"{i:02d}.jpg"
        Image.new("RGB", (32, 24), (i, i, i)).save(path)
        records.append(ImageRecord(f"{i:02d}", path, None))
    (tmp_path / "img" / "49.jpg").write_bytes(b"broken")
    first = page_of(records, ws, 1)
    assert (first.page, first.num_pages, first.total, len(first.items)) == (1, 2, 50, PAGE_SIZE)
    assert first.names == [f"{i:02d}" for i in range(48)] and first.problems == []
    assert first.summary == "page 1 of 2 · images 1–48 of 50"
    second = page_of(records, ws, 5)  # clamped to the last page
    assert second.page == 2 and second.names == ["48", "49"]
    assert second.items[1][1] == "49 (unreadable)" and second.items[1][0].endswith("broken-thumb.png")
    assert len(second.problems) == 1 and "49.jpg" in second.problems[0]


def test_gallery_page_on_the_demo_user(workspace: Workspace) -> None:
    records = read_user(workspace, "id1").records
    labelled = [r.name for r in records if r.labelled]
    result = gallery_page(workspace, "id1", 1, GalleryFilter(labelled="labelled"))
    assert result.names == labelled and result.total == len(labelled) == 15  # 30 % of 50
    for thumb, caption in result.items:
        assert Path(thumb).is_relative_to(workspace.thumbs) and caption in labelled
    with pytest.raises(DatasetError, match="unknown user"):
        gallery_page(workspace, "../../etc", 1)


def test_group_names_and_class_histogram() -> None:
    groups = {"a": 0, "b": 1, "c": 0}
    assert group_names(groups, 0) == ("a", "c") and group_names(groups, None) is None
    with pytest.raises(DatasetError, match="compute groups"):
        group_names(None, 1)
    histogram = class_histogram([_record("a", (8,)), _record("b", (8, 12, 8)), _record("c"), _record("d", (12,))])
    expected = np.zeros(21)
    expected[8], expected[12] = 2 / 4, 2 / 4  # a repeated tag counts once per image
    np.testing.assert_allclose(histogram, expected)


# ---------------------------------------------------------------- image view and overlay

def test_overlay_blends_only_object_pixels() -> None:
    image = np.full((2, 3, 3), 100, np.uint8)
    label = np.array([[0, 1, 255], [15, 0, 0]], np.uint8)
    out = overlay(image, label, 0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[0, 1], [114, 50, 50])  # aeroplane (128,0,0): 0.5*100 + 0.5*128 = 114
    np.testing.assert_array_equal(out[0, 2], [178, 178, 178])  # ignore (white): 0.5*100 + 0.5*255 = 177.5 -> 178 (rint, half to even)
    np.testing.assert_array_equal(out[1, 0], [146, 114, 114])  # person (192,128,128): 0.5*100 + 0.5*192 = 146
    np.testing.assert_array_equal(overlay(image, label, 0.0), image)
    np.testing.assert_array_equal(overlay(image, label, 1.0)[0, 1], [128, 0, 0])


def test_legend_lists_classes_by_share() -> None:
    label = np.array([[0, 0, 0, 8], [8, 8, 15, 255]], np.uint8)
    assert legend(label) == [("background", "#000000", 37.5), ("cat", "#400000", 37.5),
                             ("person", "#c08080", 12.5), ("ignore", "#ffffff", 12.5)]


def test_image_view_writes_an_exact_png_overlay(workspace: Workspace) -> None:
    from pss.api import load_image, load_label

    record = next(r for r in read_user(workspace, "id1").records if r.labelled)
    view = image_view(workspace, "id1", record.name, 0.5)
    assert view.path.suffix == ".png" and view.path.is_relative_to(workspace.cache)
    assert view.labelled and view.message == "" and view.legend
    image, label = load_image(record.image_path), load_label(record.mask_path)
    with Image.open(view.path) as png:
        assert png.format == "PNG"
        shown = np.asarray(png.convert("RGB"))
    big_image, big_label = fit_for_display(image, label)
    assert shown.shape[0] >= 480 or shown.shape[1] >= 480  # the 192-px demo image is enlarged for viewing
    np.testing.assert_array_equal(shown, overlay(big_image, big_label, 0.5))  # lossless: exactly these pixels
    assert set(np.unique(big_label)) == set(np.unique(label))  # nearest neighbour: no new label values
    assert view.tags and "labelled" in view.tags_markdown()
    with pytest.raises(DatasetError, match="no image named"):
        image_view(workspace, "id1", "../../etc/passwd")


def test_image_view_reports_a_mask_of_the_wrong_size(tmp_path: Path) -> None:
    from pss.data.labels import write_label_png

    user = tmp_path / "data" / "personal" / "id1"
    (user / "JPEGImages").mkdir(parents=True)
    (user / "SegmentationClass").mkdir()
    Image.new("RGB", (40, 30)).save(user / "JPEGImages" / "a.jpg")
    write_label_png(user / "SegmentationClass" / "a.png", np.zeros((40, 30), np.uint8))  # transposed size
    (user / "imgLabelList.txt").write_text("a.jpg:UNKNOWN\n")
    view = image_view(open_workspace(tmp_path), "id1", "a", 0.6)
    assert "30×40" in view.message and "40×30" in view.message and view.legend == []


# ---------------------------------------------------------------- collection cache

def test_collection_is_reread_only_when_the_folder_changes(extra_user, workspace: Workspace) -> None:
    user, folder = extra_user
    first = read_user(workspace, user)
    assert read_user(workspace, user) is first
    time.sleep(0.01)
    os.remove(next((folder / "JPEGImages").iterdir()))
    second = read_user(workspace, user)
    assert second is not first and len(second.records) == len(first.records) - 1
    import shutil

    shutil.rmtree(folder)
    with pytest.raises(DatasetError, match="is gone"):
        read_user(workspace, user)


# ---------------------------------------------------------------- groups

class _Grouping:
    """The part of GroupingResult the services use."""

    def __init__(self, groups: dict[str, int], k: int) -> None:
        self.names, self.groups, self.k = list(groups), np.array(list(groups.values())), k

    def sizes(self) -> np.ndarray:
        return np.bincount(self.groups, minlength=self.k)

    def members(self, group: int) -> list[str]:
        return [n for n, g in zip(self.names, self.groups) if g == group]


def test_group_choices_and_selection_round_trip() -> None:
    grouping = _Grouping({"a": 0, "b": 2, "c": 0}, 3)
    assert group_choices(grouping) == [("group 0 · 2 images", "0"), ("group 2 · 1 images", "2")]
    assert group_choices(None, include_all=True) == [("all groups", "all")]
    assert parse_group("2") == 2 and parse_group("all") is None and parse_group(None) is None
    with pytest.raises(DatasetError):
        parse_group("two")
    selection = Selection("group", 0, context="id1/K3")
    assert parse_selection(selection.to_json()) == selection
    assert selected_names(selection, grouping) == ("a", "c")
    with pytest.raises(DatasetError, match="does not exist"):
        selected_names(Selection("group", 5), grouping)
    # the plot's own payloads: a clicked point picks its group, a lasso picks names
    click = json.dumps({"index": 2, "value": {"kind": "point", "name": "b", "group": 2}})
    assert parse_selection(click) == Selection("group", 2)
    lasso = json.dumps({"index": 2, "value": {"kind": "lasso", "names": ["c", "a"]}})
    assert selected_names(parse_selection(lasso), None) == ("c", "a")
    assert parse_selection("") == Selection() and selected_names(Selection(), None) is None
    for bad in ("{", "[1]", json.dumps({"kind": "circle"}), json.dumps({"kind": "group"})):
        with pytest.raises(DatasetError):
            parse_selection(bad)


def test_composition_figure_values() -> None:
    records = [_record("a", (8,)), _record("b", (8, 12)), _record("c", (12,)), _record("d", (15,))]
    figure = composition_figure(records, ["a", "b"], "group 0")
    everyone, chosen = figure.data
    assert everyone.x[7] == "cat" and everyone.y[7] == 50.0 and chosen.y[7] == 100.0
    assert everyone.y[11] == 50.0 and chosen.y[11] == 50.0  # dog
    assert everyone.y[14] == 25.0 and chosen.y[14] == 0.0  # person


# ---------------------------------------------------------------- statistics

def test_statistics_figures_for_all_users_and_one(workspace: Workspace) -> None:
    both = statistics_figures(workspace, "all users")
    assert both.users == ["id1", "id2"] and both.problems == []
    assert {trace.name for trace in both.proportion.data} == {"id1", "id2"}
    assert both.cooccurrence.data[0].z.shape == (20, 20)
    diagonal = np.diag(both.cooccurrence.data[0].z)
    assert set(np.round(diagonal, 6)) <= {0.0, 1.0}  # P(i | i) = 1 for every tagged class
    one = statistics_figures(workspace, "id2")
    assert one.users == ["id2"] and [t.name for t in one.proportion.data] == ["id2"]
    assert sum(one.instances.data[0].y) > 0
    with pytest.raises(DatasetError, match="unknown user"):
        statistics_figures(workspace, "id7")


# ---------------------------------------------------------------- workspace and CLI

def test_open_workspace_and_user_names_are_checked(tmp_path: Path, workspace: Workspace) -> None:
    with pytest.raises(DatasetError, match="not a pss workspace"):
        open_workspace(tmp_path)
    for bad in ("../id1", "/etc", "id1/../id2", ""):
        with pytest.raises(DatasetError, match="unknown user"):
            read_user(workspace, bad)


def test_parse_auth_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret") and parse_auth(None) is None
    for bad in ("ann", "ann:", ":pw"):
        with pytest.raises(ConfigError, match="user:password"):
            parse_auth(bad)
    assert main(["--workspace", str(tmp_path), "--auth", "nobody"]) == 2
    assert "--auth must look like" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stray.txt").write_text("not a data root")
    assert main(["--workspace", str(tmp_path)]) == 2
    assert "has no personal/ folder" in capsys.readouterr().err


def test_first_run_generates_the_demo_with_progress_then_reuses_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pss.data.demo import DemoConfig
    from pss_app.__main__ import prepare_workspace

    small = DemoConfig(num_source=4, num_users=1, images_per_user=6)
    ws = prepare_workspace(tmp_path / "fresh", config=small)
    err = capsys.readouterr()
    assert "generating the embedded demo" in err.out and "100%" in err.err  # tqdm draws on stderr
    assert [r.name for r in read_user(ws, "id1").records] and (ws.root / "runs").is_dir()
    stamp = (ws.personal / "id1").stat().st_mtime_ns
    again = prepare_workspace(tmp_path / "fresh", config=small)
    assert again == ws and (ws.personal / "id1").stat().st_mtime_ns == stamp
    assert "generating" not in capsys.readouterr().out


def test_quickstart_banner_offers_the_chain_before_anything_ran(tmp_path: Path) -> None:
    """The banner and the empty states of Inspect / Compare on a workspace without runs (moved here from
    tests/test_quickstart.py, which tests the engine side only)."""
    from pss.api import create_demo_workspace
    from pss.api import quickstart as qs
    from pss.data.demo import DemoConfig
    from pss_app.services import quickstart as banner_svc

    ws, _ = create_demo_workspace(tmp_path / "ws", config=DemoConfig(num_source=4, num_users=2, images_per_user=6))
    estimate = qs.estimate(ws, qs.status(ws, "id2"))
    view = banner_svc.banner(ws, "id2")
    assert view.can_start and not view.active and qs.format_minutes(estimate.total_s) in view.button
    assert "Train the demo comparison" in banner_svc.empty_state(ws, "id2", "compare", 0)
    assert banner_svc.empty_state(ws, "id2", "compare", 2) == ""
    assert banner_svc.compare_selection(ws, "id2") == [] == qs.status(ws, "id2").compare_runs


def test_every_caller_shares_the_one_cached_user_reader(workspace: Workspace) -> None:
    """The gallery, Inspect / Compare (``user_records``) and statistics read a user through ``pss.api.read_user``:
    one parse, one name rule."""
    from pss.api import user_records
    from pss.api.users import check_user_name

    collection = read_user(workspace, "id1")
    assert user_records(workspace, "id1") is collection.records
    assert gallery_page(workspace, "id1", 1).total == len(collection.records)
    assert check_user_name(workspace, "id12") == "id12"
    for bad in ("id1/..", "ID1", "id", "id1 ", None):
        with pytest.raises(DatasetError, match="unknown user"):
            check_user_name(workspace, bad)
