"""The Annotate endpoints of the running app through ``gradio_client``: open, click tools, undo/redo, pre-label,
tags, submit, history diff, review, the queue and the fine-tune launch."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from annotate_support import USER, annotate_workspace
from pss.api import annotate as ann
from pss.api.users import read_user
from pss.data.annotations import read_annotated
from pss.data.labels import read_label_png

ENDPOINTS = {"/annotate_choices", "/annotate_open", "/annotate_stroke", "/annotate_undo", "/annotate_redo",
             "/annotate_discard", "/annotate_prelabel", "/annotate_click", "/annotate_submit", "/annotate_review",
             "/annotate_tags", "/annotate_diff", "/annotate_revert", "/annotate_queue", "/annotate_next",
             "/annotate_finetune", "/annotate_finetune_result"}
FILL = "fill superpixel"
EMPTY_TABLE = {"headers": ["#", "image", "state", "mean entropy", "group", "why"], "data": [], "metadata": None}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator:
    from gradio_client import Client

    from inspect_support import launch

    trained = annotate_workspace(tmp_path_factory, "annotate-client")
    demo, url = launch(trained.ws)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("annotate-downloads")))
    yield trained, client
    client.close()
    demo.close()


def _unlabelled(ws) -> list[str]:
    return [r.name for r in read_user(ws, USER).records if r.mask_path is None]


def test_every_endpoint_is_named(served) -> None:
    _, client = served
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert ENDPOINTS <= named


def test_open_fill_undo_redo_submit_review(served) -> None:
    trained, client = served
    ws = trained.ws
    image_update, run_update, start_update, status = client.predict(USER, None, None, None,
                                                                     api_name="/annotate_choices")
    assert status == "" and run_update["value"] in (trained.pss_run, trained.source_run)
    name = _unlabelled(ws)[0]
    assert any(value == name and "unlabelled" in label for label, value in image_update["choices"])
    opened = client.predict(USER, name, 0.5, FILL, api_name="/annotate_open")
    info = next(v for v in opened if isinstance(v, str) and f"**{name}**" in v)
    assert opened[-1] == "" and "state **unlabelled**" in info
    t = ann.target(ws, USER, name)
    # fill two superpixels with "dog" (class 12) through the click endpoint (image pixels)
    for x, y in ((10, 10), (t.width - 10, t.height - 10)):
        out = client.predict(USER, name, FILL, "dog", "", 0.5, x, y, api_name="/annotate_click")
        assert out[-1] == "" and "superpixel" in out[-2]
    mask = ann.current_mask(t)
    assert mask[10, 10] == 12 and mask[t.height - 10, t.width - 10] == 12
    assert ann.image_state(ws, USER, name) == "draft"
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_undo")
    assert ann.current_mask(t)[t.height - 10, t.width - 10] == 255
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_redo")
    np.testing.assert_array_equal(ann.current_mask(t), mask)
    out = client.predict(USER, name, 0.5, FILL, api_name="/annotate_submit")
    assert out[-1] == "" and "listed in annotated.txt" in out[-3]
    np.testing.assert_array_equal(read_label_png(t.mask_path), mask)
    assert name in read_annotated(ws.personal / USER)
    diff, status = client.predict(USER, name, 1, api_name="/annotate_diff")
    assert "v1 against nothing" in diff and status == ""
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_review")
    assert ann.image_state(ws, USER, name) == "reviewed"


def test_a_stroke_through_the_api_paints_the_draft(served) -> None:
    trained, client = served
    ws = trained.ws
    name = _unlabelled(ws)[2]
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_open")
    from pss_app.services.annotate import image_view

    key = image_view(ws, USER, name).key
    stroke = {"points": [[2.5, 3.5], [6.5, 3.5]], "size": 1, "class_id": 12}  # row 3, columns 2-6
    message = client.predict(USER, name, key, stroke, api_name="/annotate_stroke")
    assert message.startswith("draft saved")
    mask = ann.current_mask(ann.target(ws, USER, name))
    assert np.argwhere(mask == 12).tolist() == [[3, 2], [3, 3], [3, 4], [3, 5], [3, 6]]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="class must be 0..20"):
        client.predict(USER, name, key, {**stroke, "class_id": 99}, api_name="/annotate_stroke")
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_discard")


def test_prelabel_and_tags(served) -> None:
    trained, client = served
    ws = trained.ws
    name = _unlabelled(ws)[1]
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_open")
    info, message, status = client.predict(USER, name, ["cat", "person"], api_name="/annotate_tags")
    assert status == "" and "cat, person" in message and "tags: cat, person" in info
    out = client.predict(USER, name, trained.source_run, 0.3, 0.5, FILL, api_name="/annotate_prelabel")
    assert out[-1] == "" and "pre-labelled from" in out[-2]
    mask = ann.current_mask(ann.target(ws, USER, name))
    assert set(np.unique(mask)) <= {0, 8, 15, 255}
    assert ann.image_state(ws, USER, name) == "pre-labelled"
    client.predict(USER, name, 0.5, FILL, api_name="/annotate_discard")
    assert ann.read_draft(ws, USER, name) is None


def test_queue_next_and_errors(served) -> None:
    trained, client = served
    table, note, status = client.predict(USER, trained.source_run, "uncertainty", 4, api_name="/annotate_queue")
    assert status == "" and "unlabelled training images" in note
    rows = table["data"]
    assert rows and all("mean entropy" in row[5] for row in rows)
    _, _, image_update, status = client.predict(USER, "", "random", 4, EMPTY_TABLE, None,
                                                  api_name="/annotate_next")
    assert status == "" and image_update["value"] in _unlabelled(trained.ws)
    *_, status = client.predict(USER, "nope", 0.5, FILL, api_name="/annotate_undo")
    assert status.startswith("⚠") and "no image named" in status


def test_finetune_launch_builds_the_engine_request(served) -> None:
    """The fine-tune (``train.annotated_weight=1.0`` from the chosen run) is queued through the job service."""
    trained, client = served
    result = client.predict(USER, trained.source_run, api_name="/annotate_finetune")
    message, status = result[0], result[-1]
    assert "queued" in message and not status.startswith("⚠"), (message, status)
