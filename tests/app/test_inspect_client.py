"""Every Inspect / Compare endpoint of the running app, called through ``gradio_client``."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from inspect_support import USER, launch, trained_workspace
from pss.api.inspect import user_records

ENDPOINTS = {"/inspect_choices", "/inspect_view", "/inspect_pixel", "/compare_choices", "/compare_image",
             "/compare_image_table", "/compare_tables", "/compare_export"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator:
    from gradio_client import Client

    trained = trained_workspace(tmp_path_factory)
    demo, url = launch(trained.ws)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("inspect-downloads")))
    yield trained, client
    client.close()
    demo.close()


def _labelled(ws) -> list[str]:
    return [r.name for r in user_records(ws, USER) if r.mask_path is not None]


def _png(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _rows(table: dict) -> list[list]:
    return table["data"]


def test_every_endpoint_is_named(served) -> None:
    _, client = served
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert ENDPOINTS <= named


def test_inspect_choices_view_and_pixel(served) -> None:
    trained, client = served
    run_update, image_update, status = client.predict(USER, None, None, api_name="/inspect_choices")
    assert run_update["value"] == trained.pss_run and status == ""
    assert [c[1] for c in run_update["choices"]] == [trained.pss_run, trained.source_run]
    name = _labelled(trained.ws)[0]
    assert image_update["value"] == name
    prediction, entropy, pseudo, summary, pseudo_info, legend, note, mask, status = client.predict(
        trained.pss_run, name, 0.6, False, api_name="/inspect_view")
    # an evaluation image: its mask, captioned as the scored ground truth
    assert _png(mask["value"]) == _png(prediction) and mask["label"] == "Mask: ground truth (scored)"
    assert "ground truth (scored)" in summary
    width, height = _png(prediction)
    assert _png(pseudo) == (width, height) and _png(entropy)[0] > width  # the colour bar is appended
    assert f"**{name}**" in summary and "mean entropy" in summary and "step 2" in pseudo_info
    assert "pss-swatch" in legend and "Click a pixel" in note and status == ""
    marked, heading, probabilities, attention, regions, status = client.predict(
        trained.pss_run, name, 10, 20, 0.6, api_name="/inspect_pixel")
    assert _png(marked) == (width, height) and "pixel (10, 20)" in heading and status == ""
    assert len(probabilities["confidences"]) == 5
    rows = _rows(attention)
    assert sum(float(r[3]) for r in rows) == pytest.approx(1.0, abs=1e-4) and rows[-1][1].endswith("other regions")
    assert 1 <= len(regions) <= 3 and all(_png(item["image"]) for item in regions)


def test_inspect_errors_leave_the_app_serving(served) -> None:
    trained, client = served
    name = _labelled(trained.ws)[0]
    *_, status = client.predict("no-such-run", name, 0.6, False, api_name="/inspect_view")
    assert status.startswith("⚠") and "no-such-run" in status
    foreign = trained.ws.runs / trained.pss_run / "checkpoints" / "step_99999999.pt"
    torch.save({"format": 99, "model": {}}, foreign)
    try:
        *_, status = client.predict(trained.pss_run, name, 0.3, False, api_name="/inspect_view")
        assert "format 99" in status and "re-train" in status
    finally:
        foreign.unlink()
    *_, status = client.predict(trained.pss_run, name, 0.3, False, api_name="/inspect_view")
    assert status == ""


def test_compare_endpoints(served, tmp_path) -> None:
    trained, client = served
    runs_update, image_update, status = client.predict(USER, None, api_name="/compare_choices")
    assert set(runs_update["value"]) == {trained.pss_run, trained.source_run} and status == ""
    name = image_update["value"]
    assert name == _labelled(trained.ws)[0]
    runs = [trained.pss_run, trained.source_run]
    figure, scores, messages, status = client.predict(USER, name, runs, api_name="/compare_image")
    width, height = _png(figure)
    record = next(r for r in user_records(trained.ws, USER) if r.name == name)
    panel_w, panel_h = (2 * side for side in Image.open(record.image_path).size)  # the 192 px demo image, x2
    assert (width, height) == (4 * panel_w + 3 * 6, 2 * (panel_h + 38) + 6)  # photo, GT, 2 runs; errors below
    assert status == "" and messages == ""
    assert [row[0] for row in _rows(scores)][0].startswith("OURS-S1 #") and len(_rows(scores)) == 2
    table, status = client.predict(USER, trained.source_run, trained.pss_run, "MIoU", "all images",
                                   api_name="/compare_image_table")
    assert table["headers"] == ["image", "A", "B", "B - A"] and len(_rows(table)) == len(_labelled(trained.ws))
    per_class, fiou, miou, status = client.predict(USER, runs, api_name="/compare_tables")
    assert len(_rows(per_class)) == 22 and [r[0] for r in _rows(fiou)] == ["No-DA", "OURS-S1"]
    assert miou["headers"] == ["method", USER, "Mean"]
    files, status = client.predict(USER, runs, trained.source_run, trained.pss_run, "FIoU", api_name="/compare_export")
    assert len(files) == 4 and status == ""
    assert open(files[1]).read().splitlines()[0] == "method,id1,Mean"
    with pytest.raises(Exception, match="not in the list of choices"):  # Gradio checks the checkbox choices
        client.predict(USER, name, ["not-a-run"], api_name="/compare_image")
    table, status = client.predict(USER, trained.source_run, "not-a-run", "FIoU", "all images",
                                   api_name="/compare_image_table")
    assert status.startswith("⚠") and "not a finished run" in status
    figure, *_ = client.predict(USER, name, runs, api_name="/compare_image")  # still serving
    assert _png(figure) == (width, height)
