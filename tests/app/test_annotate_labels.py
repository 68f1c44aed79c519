"""The Annotate tab's image list ("name · state") follows the state after every save, pre-label, submit, revert
and review (issue 16): a listener of its own, ``annotate_image_labels``, re-lists the choices whenever the state
line (``#annotate-info``) or the draft-save message (``#annotate-saved``) changes, without touching the save path.
Checked on the app's wiring and through ``gradio_client`` after each action made through the api."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from annotate_support import USER, annotate_workspace
from pss.api import annotate as ann
from pss.api.users import read_user


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator:
    from gradio_client import Client

    from inspect_support import launch

    trained = annotate_workspace(tmp_path_factory, "annotate-labels")
    demo, url = launch(trained.ws)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("labels-downloads")))
    yield trained, demo, client
    client.close()
    demo.close()


def _by_elem_id(config: dict, elem_id: str) -> int:
    ids = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    assert len(ids) == 1, (elem_id, ids)
    return ids[0]


def test_the_labels_listener_fires_on_every_state_line_and_save(served) -> None:
    _, demo, _ = served
    config = demo.get_config_file()
    (dep,) = [d for d in config["dependencies"] if d.get("api_name") == "annotate_image_labels"]
    targets = {tuple(t) for t in dep["targets"]}
    assert (_by_elem_id(config, "annotate-info"), "change") in targets
    assert (_by_elem_id(config, "annotate-saved"), "change") in targets
    assert dep["outputs"] == [_by_elem_id(config, "annotate-image")]
    # every action that shows an image writes the state line, and the draft save writes its message
    info, saved = _by_elem_id(config, "annotate-info"), _by_elem_id(config, "annotate-saved")
    writers = {d.get("api_name") for d in config["dependencies"] if info in d["outputs"] or saved in d["outputs"]}
    assert {"annotate_open", "annotate_after_stroke", "annotate_prelabel", "annotate_click", "annotate_submit",
            "annotate_revert", "annotate_review", "annotate_undo", "annotate_redo", "annotate_discard"} <= writers


def test_each_action_shows_its_state_in_the_list(served) -> None:
    trained, _, client = served
    ws = trained.ws
    name = next(r.name for r in read_user(ws, USER).records if r.mask_path is None)
    t = ann.target(ws, USER, name)

    def label() -> str:
        update = client.predict(USER, api_name="/annotate_image_labels")
        assert "value" not in update or update["value"] is None  # choices only: the editor is not reloaded
        labels = {value: text for text, value in update["choices"]}
        return labels[name]

    assert label() == f"{name} · unlabelled"
    from pss_app.services import annotate as svc

    svc.apply_prelabel(ws, USER, name, trained.pss_run, 0.1, 0.5, svc.TOOLS[0])
    assert label() == f"{name} · pre-labelled"
    mask = np.zeros((t.height, t.width), np.uint8)
    mask[: t.height // 2] = 15
    ann.push_version(t, mask, "manual")  # what a draft save writes
    assert label() == f"{name} · draft"
    ann.submit(ws, USER, name)
    assert label() == f"{name} · submitted"
    ann.mark_reviewed(ws, USER, name)
    assert label() == f"{name} · reviewed"
    ann.revert(ws, USER, name, 1)
    assert label() == f"{name} · submitted"
