"""The Inspect / Compare services on two real (tiny, 2-step) runs: values against the engine, caches, errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from inspect_support import USER, trained_workspace
from pss.api import compare as compare_api
from pss.api import inspect as inspect_api
from pss.api.maps import ERROR_SHORT, error_categories
from pss.data.labels import CLASS_NAMES, read_label_png
from pss.errors import CheckpointError
from pss_app.services import compare as compare_service
from pss_app.services import inspect as inspect_service


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory)


def _labelled(ws) -> list[str]:
    return [r.name for r in inspect_api.user_records(ws, USER) if r.mask_path is not None]


def _fresh_inference(ws, run_id: str, name: str):
    """The engine's inference computed from scratch: the run's model, the image's evaluation chunk."""
    from pss.api.runs import load_run_model
    from pss.inference import infer_image

    model, config, device = load_run_model(ws, run_id, "cpu")
    ctx = inspect_api.run_context(ws, run_id)
    records = inspect_api.user_records(ws, USER)
    record = inspect_api.find_record(records, name, USER)
    group = inspect_api.evaluation_group(ctx, records, record, ws, device)
    return infer_image(model, record, group, device, config.data.eval_short_side)


def test_run_and_image_choices(trained) -> None:
    runs = inspect_service.run_choices(trained.ws, USER)
    assert [value for _, value in runs] == [trained.pss_run, trained.source_run]  # newest first
    assert runs[0][0].startswith("OURS-S1 #") and runs[1][0].startswith("No-DA #")
    images = inspect_service.image_choices(trained.ws, USER)
    labelled = _labelled(trained.ws)
    assert [value for _, value in images[:len(labelled)]] == labelled and len(images) == 12
    assert inspect_service.run_choices(trained.ws, "id2") == []


def test_attention_rows_sum_to_one_and_match_the_engine(trained) -> None:
    ws, run, name = trained.ws, trained.pss_run, _labelled(trained.ws)[0]
    view = inspect_service.pixel_view(ws, run, name, 40, 30)
    assert view.attention_total == pytest.approx(1.0, abs=1e-4)
    fresh = _fresh_inference(ws, run, name)
    row, col = fresh.grid_cell(40, 30)
    weights = fresh.attention[row * fresh.grid[1] + col]
    top = np.argsort(-weights)[:inspect_service.TOP_REGIONS]
    shown = view.attention_rows[:-1]
    assert [r[1] for r in shown] == [fresh.group_images[i // 21] for i in top]
    assert [r[2] for r in shown] == [CLASS_NAMES[i % 21] for i in top]
    np.testing.assert_allclose([r[3] for r in shown], weights[top], atol=1e-6)
    assert view.attention_rows[-1][1] == f"{weights.size - len(top)} other regions"
    per_image = weights.reshape(len(fresh.group_images), 21)
    top_images = [fresh.group_images[g] for g in np.argsort(-per_image.sum(1), kind="stable")[:3]]
    assert [caption.split(" · ")[0] for _, caption in view.region_gallery] == top_images
    for path, caption in view.region_gallery:
        assert Image.open(path).format == "PNG" and " · weight " in caption
    info = fresh.pixel_info(40, 30)
    assert view.pixel.label == info["label"] and view.pixel.entropy == pytest.approx(info["entropy"], abs=1e-6)
    assert sum(p for _, p in view.pixel.probabilities) == pytest.approx(1.0, abs=2e-3)


def test_cached_inference_equals_fresh_and_the_saved_prediction(trained) -> None:
    ws, run, name = trained.ws, trained.pss_run, _labelled(trained.ws)[1]
    inspect_api.clear_caches(memory_only=False, ws=ws)
    first = inspect_api.image_inference(ws, run, name, "cpu")
    inspect_api.flush_writes()  # the npz is written in the background
    assert inspect_api.inference_cache_path(ws, run, name).is_file()
    inspect_api.clear_caches()  # memory gone: the next call reads the npz
    cached = inspect_api.image_inference(ws, run, name, "cpu")
    assert cached is not first
    fresh = _fresh_inference(ws, run, name)
    np.testing.assert_allclose(cached.prob, fresh.prob, atol=1e-3)
    np.testing.assert_array_equal(cached.label, fresh.label)
    np.testing.assert_allclose(cached.entropy, fresh.entropy, atol=1e-6)
    np.testing.assert_allclose(cached.attention, fresh.attention, atol=1e-6)
    assert cached.group_images == fresh.group_images
    assert inspect_api.image_inference(ws, run, name, "cpu") is cached  # memory hit
    saved = read_label_png(ws.runs / run / "predictions" / f"{name}.png")
    assert np.mean(saved == cached.label) > 0.99  # same group chunk and resolution as the run's evaluation


def test_inspect_view_maps_and_pseudo_selection(trained) -> None:
    ws, run = trained.ws, trained.source_run
    report = ws.store().open_run(run).read_report()
    scores = report["mean_entropy"]
    ranked = sorted(scores, key=lambda n: scores[n])
    for name in (ranked[0], ranked[-1]):
        view = inspect_service.inspect_view(ws, run, name, 0.5)
        assert view.maps.pseudo.rank == ranked.index(name) + 1 and view.maps.pseudo.total == 12
        assert view.maps.pseudo.selected == (ranked.index(name) < 6)
        assert ("**selected**" in view.pseudo) == view.maps.pseudo.selected
        assert view.maps.ignored_fraction == pytest.approx(0.2, abs=0.02)
        for path in (view.maps.prediction, view.maps.entropy, view.maps.pseudo_label):
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size[1] == view.display.height
        assert "no group region context" in view.attention_note
    pixel = inspect_service.pixel_view(ws, run, ranked[0], 5, 5)
    assert pixel.attention_rows == [] and pixel.region_gallery == []


def test_a_run_with_a_foreign_or_missing_checkpoint_gives_a_clear_message(trained) -> None:
    ws, run, name = trained.ws, trained.pss_run, _labelled(trained.ws)[0]
    foreign = ws.runs / run / "checkpoints" / "step_99999999.pt"
    torch.save({"format": 99, "model": {}}, foreign)
    try:
        with pytest.raises(CheckpointError, match="format 99"):
            inspect_service.inspect_view(ws, run, name)
        view = compare_service.compare_view(ws, USER, name, [run, trained.source_run])  # saved maps still work
        assert view.figure.is_file() and view.messages == ""
    finally:
        foreign.unlink()
    assert inspect_service.inspect_view(ws, run, name).maps.prediction.is_file()
    checkpoints = ws.runs / run / "checkpoints"
    checkpoints.rename(checkpoints.with_name("checkpoints.moved"))
    try:
        with pytest.raises(CheckpointError, match="has no checkpoint"):
            inspect_service.inspect_view(ws, run, name)
    finally:
        checkpoints.with_name("checkpoints.moved").rename(checkpoints)


def test_compare_figure_scores_and_error_counts(trained) -> None:
    ws, name = trained.ws, _labelled(trained.ws)[0]
    runs = [trained.pss_run, trained.source_run]
    view = compare_service.compare_view(ws, USER, name, runs)
    with Image.open(view.figure) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
    record = inspect_api.find_record(inspect_api.user_records(ws, USER), name, USER)
    target = read_label_png(record.mask_path)
    for run, row in zip(runs, view.scores.to_dict("records")):
        pred = read_label_png(ws.runs / run / "predictions" / f"{name}.png")
        counts = np.bincount(error_categories(pred, target).ravel(), minlength=5)
        assert [row[ERROR_SHORT[c]] for c in range(5)] == [round(100 * n / target.size, 1) for n in counts]
        fiou, miou = compare_api.score_image(pred, target)
        assert row["FIoU"] == round(fiou * 100, 2) and row["MIoU"] == round(miou * 100, 2)


def test_image_table_sorts_and_filters_by_the_difference(trained, monkeypatch) -> None:
    names = _labelled(trained.ws)
    a = {n: (0.5, 0.4) for n in names}
    b = {n: (0.5 + 0.1 * (i - 1), 0.4) for i, n in enumerate(names)}  # one loss, one tie, then gains
    monkeypatch.setattr(compare_api, "image_scores", lambda ws, run: a if run == trained.source_run else b)
    table = compare_service.image_table(trained.ws, USER, trained.source_run, trained.pss_run, "FIoU")
    assert table["B - A"].tolist() == sorted([round(10.0 * (i - 1), 2) for i in range(len(names))], reverse=True)
    assert table.iloc[0]["image"] == names[-1]
    losses = compare_service.image_table(trained.ws, USER, trained.source_run, trained.pss_run, "FIoU", "A better")
    assert losses["image"].tolist() == [names[0]] and losses["B - A"].tolist() == [-10.0]
    ties = compare_service.image_table(trained.ws, USER, trained.source_run, trained.pss_run, "FIoU", "tied")
    assert ties["image"].tolist() == [names[1]]


def test_tables_and_csv_export(trained) -> None:
    ws, runs = trained.ws, [trained.pss_run, trained.source_run]
    per_class, fiou, miou = compare_service.tables(ws, USER, runs)
    report = ws.store().open_run(trained.pss_run).read_report()
    column = per_class.columns[1]
    assert column.startswith("OURS-S1 #") and per_class["class"].tolist()[-1] == "MIoU"
    assert per_class[column].tolist()[:21] == [round(v * 100, 2) for v in report["per_class_iou"]["pss"]]
    assert fiou["method"].tolist() == ["No-DA", "OURS-S1"] and list(fiou.columns) == ["method", USER, "Mean"]
    source_report = ws.store().open_run(trained.source_run).read_report()
    assert miou[USER].tolist() == [round(source_report["miou"]["pss"] * 100, 2), round(report["miou"]["pss"] * 100, 2)]
    paths = compare_service.export(ws, USER, runs, trained.source_run, trained.pss_run, "FIoU")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["per_class_iou.csv", "results_fiou.csv", "results_miou.csv",
                                                     "images_fiou_difference.csv"]
    exported = pd.read_csv(paths[0], index_col=0)
    assert exported.loc["background", column] == per_class.iloc[0][column]
    assert all(str(ws.root) in p for p in paths)  # served from the workspace only
