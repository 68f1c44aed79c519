"""Every data-returning event of the running app, called through ``gradio_client``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pss.api import cached_grouping, read_user
from pss_app.services.viewer import image_view

K = 4  # the K the session app starts with (conftest.K)

EXPECTED_ENDPOINTS = {
    "/users", "/gallery_first_page", "/gallery_page", "/gallery_previous", "/gallery_next", "/group_filter_choices",
    "/image_view", "/load_groups", "/compute_groups", "/pick_group", "/plot_selection", "/selection_page",
    "/selection_goto_page", "/selection_previous", "/selection_next", "/statistics",
}


def _captions(gallery: list[dict]) -> list[str]:
    return [item["caption"] for item in gallery]


def test_every_data_event_has_an_api_name(client) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    named = set(api["named_endpoints"])
    assert EXPECTED_ENDPOINTS <= named  # (other tabs add theirs)
    assert not api["unnamed_endpoints"]
    assert not [name for name in named if "lambda" in name]  # no name Gradio made up from a function


def test_users(client) -> None:
    user_update, scope_update = client.predict("id2", api_name="/users")
    assert "value" not in user_update and [c[0] for c in user_update["choices"]] == ["id1", "id2"]
    moved, _ = client.predict("id7", api_name="/users")  # a user that is gone: the first one is chosen
    assert moved["value"] == "id1"
    assert [c[0] for c in scope_update["choices"]] == ["all users", "id1", "id2"]


def test_gallery_pages_and_filters(client, workspace) -> None:
    names = [r.name for r in read_user(workspace, "id1").records]
    gallery, page, info, status = client.predict("id1", K, "all", "all", "all", api_name="/gallery_first_page")
    assert _captions(gallery) == names[:48] and page == 1 and status == ""
    assert info == "page 1 of 2 · images 1–48 of 50"
    gallery, page, info, _ = client.predict("id1", K, "all", "all", "all", 1, api_name="/gallery_next")
    assert _captions(gallery) == names[48:] and page == 2
    gallery, page, _, _ = client.predict("id1", K, "all", "all", "all", 2, api_name="/gallery_previous")
    assert page == 1 and len(gallery) == 48
    gallery, page, _, _ = client.predict("id1", K, "all", "all", "all", 99, api_name="/gallery_page")
    assert page == 2  # clamped to the last page
    tagged = [r.name for r in read_user(workspace, "id1").records if 15 in r.tags]  # person
    gallery, _, info, _ = client.predict("id1", K, "person", "all", "labelled", api_name="/gallery_first_page")
    labelled = {r.name for r in read_user(workspace, "id1").records if r.labelled}
    assert _captions(gallery) == [n for n in tagged if n in labelled]
    for item in gallery:  # thumbnails arrive as the JPEG files of the workspace's thumbnail cache
        with Image.open(item["image"]) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 160


def test_image_view_is_served_as_the_exact_png(client, workspace) -> None:
    record = next(r for r in read_user(workspace, "id2").records if r.labelled)
    path, details, legend, status = client.predict("id2", record.name, 0.4, api_name="/image_view")
    assert status == "" and record.name in details and "pss-swatch" in legend
    served = Path(path).read_bytes()
    assert served[:8] == b"\x89PNG\r\n\x1a\n"
    assert served == image_view(workspace, "id2", record.name, 0.4).path.read_bytes()  # no re-encoding (webp)
    empty = client.predict("id2", "", 0.4, api_name="/image_view")
    assert empty[0] is None and empty[3] == ""


def test_groups_compute_select_and_filter(client, workspace) -> None:
    scatter, *_rest, status = client.predict("id2", K, api_name="/load_groups")
    if cached_grouping(workspace, "id2", K) is None:
        assert scatter == "" and "Compute groups" in status
    scatter, group_update, filter_update, selection, status = client.predict("id2", K, api_name="/compute_groups")
    grouping = cached_grouping(workspace, "id2", K)
    assert grouping is not None and status.startswith(f"id2: {len(grouping.names)} images in {grouping.k} groups")
    figure = json.loads(scatter)
    points = [point for trace in figure["data"] for point in trace["customdata"]]
    assert sorted(p[0] for p in points) == sorted(grouping.names)
    assert all(p[1] == grouping.group_of(p[0]) for p in points)
    assert all(p[2].startswith("gradio_api/file=") for p in points)  # hover thumbnails from the workspace
    assert [c[1] for c in group_update["choices"]] == [str(g) for g in range(grouping.k) if grouping.sizes()[g]]
    assert filter_update["choices"][0] == ["all groups", "all"]
    first = int(grouping.groups[0])
    assert json.loads(selection)["kind"] == "group" and json.loads(selection)["group"] == first

    picked, status = client.predict("id2", K, "1", api_name="/pick_group")
    assert status == ""
    gallery, page, info, composition, status = client.predict("id2", K, picked, api_name="/selection_page")
    assert _captions(gallery) == grouping.members(1) and "group 1" in info and status == ""
    assert composition["type"] == "plotly"
    gallery, *_ = client.predict("id2", K, "all", "1", "all", api_name="/gallery_first_page")
    assert _captions(gallery) == grouping.members(1)  # the Images tab's group filter agrees

    lasso = json.dumps({"kind": "lasso", "names": grouping.names[:3], "context": "test"})
    gallery, _, info, _, _ = client.predict("id2", K, lasso, api_name="/selection_page")
    assert _captions(gallery) == grouping.names[:3] and "lasso selection of 3 images" in info
    for endpoint, page_in in (("/selection_goto_page", 1), ("/selection_next", 1), ("/selection_previous", 2)):
        gallery, page, *_ = client.predict("id2", K, lasso, page_in, api_name=endpoint)
        assert page == 1 and len(gallery) == 3  # one page only: clamped
    # without a plot event (a client call) the selection is empty, not an error
    selection, status = client.predict("id2", K, api_name="/plot_selection")
    assert json.loads(selection)["kind"] == "none" and status == ""
    choices, status = client.predict("id2", K, api_name="/group_filter_choices")
    assert len(choices["choices"]) == 1 + int((grouping.sizes() > 0).sum()) and status == ""


def test_a_bad_group_pick_warns_in_the_status_line(client, app) -> None:
    """A pick the services refuse says why in the status line every tab uses; the selection is left as it was
    (it used to get the warning, in a hidden box, which the page never showed and the gallery could not parse)."""
    for args, endpoint in (((37, K, "1"), "/pick_group"), ((37, K), "/plot_selection")):
        selection, status = client.predict(*args, api_name=endpoint)  # (Gradio itself refuses unknown groups)
        assert status == "⚠ user name: expected text (a name or id), got 37 (int)"
        assert "⚠" not in str(selection)
    line = next(b for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "status")
    for endpoint in ("pick_group", "plot_selection"):  # the status line is the one above the tabs
        fn = next(fn for fn in app.demo.fns.values() if fn.api_name == endpoint)
        assert [o._id for o in fn.outputs][-1] == line._id


def test_statistics(client) -> None:
    proportion, cooccurrence, object_size, instances, summary, status = client.predict("all users",
                                                                                      api_name="/statistics")
    assert summary == "statistics of id1, id2" and status == ""
    for chart in (proportion, cooccurrence, object_size, instances):
        assert chart["type"] == "plotly" and json.loads(chart["plot"])["data"]
    *_, summary, _ = client.predict("id1", api_name="/statistics")
    assert summary == "statistics of id1"
    *_, status = client.predict("nobody", api_name="/statistics")
    assert status.startswith("⚠ unknown user")


def test_bad_input_shows_a_message_and_the_app_keeps_serving(client, extra_user) -> None:
    user, folder = extra_user
    (folder / "JPEGImages" / "zzbroken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "imgLabelList.txt").open("a").write("zzbroken.jpg:cat\n")
    gallery, _, _, status = client.predict(user, K, "all", "all", "all", api_name="/gallery_first_page")
    assert gallery[-1]["caption"] == "zzbroken (unreadable)" and "1 unreadable image(s)" in status
    *_, status = client.predict(user, "zzbroken", 0.6, api_name="/image_view")
    assert status.startswith("⚠") and "zzbroken.jpg" in status
    import shutil

    shutil.rmtree(folder)  # the user folder disappears while the app runs
    *_, status = client.predict(user, K, "all", "all", "all", api_name="/gallery_first_page")
    assert status.startswith("⚠") and "is gone" in status
    *_, status = client.predict(user, "zzbroken", 0.6, api_name="/image_view")
    assert status.startswith("⚠")
    *_, status = client.predict("../../etc", K, "all", "all", "all", api_name="/gallery_first_page")
    assert "unknown user" in status
    gallery, *_ = client.predict("id1", K, "all", "all", "all", api_name="/gallery_first_page")
    assert len(gallery) == 48  # still serving


def test_thumbnail_pixels_are_unchanged_by_serving(client, workspace) -> None:
    gallery, *_ = client.predict("id1", K, "all", "all", "all", api_name="/gallery_first_page")
    from pss.api import thumbnail

    record = read_user(workspace, "id1").records[0]
    served = np.asarray(Image.open(gallery[0]["image"]))
    np.testing.assert_array_equal(served, np.asarray(Image.open(thumbnail(workspace, record.image_path))))
