"""Data faults planted in the source and in users: training and grouping skip and name the bad files, the CLI says
what to do, numbers are read the way Python and YAML users write them, and out-of-range settings are refused with
the allowed range before anything starts."""
from __future__ import annotations

import errno
import re
from pathlib import Path

import numpy as np
import pytest

from pss.api import Workspace
from pss.cli import main as cli
from pss.config import build_config
from pss.data.labels import read_label_png, write_label_png

TRAIN = ["-c", "tiny", "--method", "source_only", "--device", "cpu"]


def _source_masks(ws: Workspace) -> list[Path]:
    """The masks of the source's training list (the demo holds a few out as the source val)."""
    voc = ws.data / "VOC2012"
    names = [line.split()[-1] for line in (voc / "list" / "train_aug.txt").read_text().splitlines() if line.strip()]
    return [voc / name.lstrip("/") for name in names]


def _run_log(ws: Workspace) -> str:
    logs = sorted(ws.runs.glob("*/log.txt"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_of_range_mask_values_are_skipped_and_named_not_a_crash(fresh_ws: Workspace, capsys) -> None:
    masks = _source_masks(fresh_ws)
    planted = masks[::2]  # every other training mask: the first batches meet them
    for path in planted:
        mask = read_label_png(path)
        mask[:8, :8] = 37  # a class index past the 21 VOC classes: IndexError in the loss before the fix
        write_label_png(path, mask)
    data_before = _snapshot(fresh_ws.data)
    code = cli(["train", "-w", str(fresh_ws.root), *TRAIN, "--steps", "4"])
    assert code == 0, capsys.readouterr().err
    log = _run_log(fresh_ws)
    assert "file(s) skipped, not trained on" in log
    for path in planted:
        assert re.search(rf"skipped \[source\] {re.escape(str(path))}: .*values 37 outside the label space", log)
    assert _snapshot(fresh_ws.data) == data_before  # nothing rewritten or removed


def test_unreadable_source_image_with_groups_is_named_at_the_end(fresh_ws: Workspace, capsys) -> None:
    image = sorted((fresh_ws.data / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[:200])  # truncated JPEG; the tiny preset groups the source (k-means)
    assert cli(["train", "-w", str(fresh_ws.root), *TRAIN, "--steps", "2"]) == 0, capsys.readouterr().err
    assert re.search(rf"skipped \[source\] {re.escape(str(image))}: ", _run_log(fresh_ws))


def test_group_names_the_skipped_images(fresh_ws: Workspace, capsys, monkeypatch) -> None:
    """``pss group`` lists each image it could not group, with the reason (it printed only a count before)."""
    import numpy as np

    from pss.api import data as api
    from pss.grouping.result import GroupingResult

    def grouped(ws, user, k, seed=0, device=None, progress=None):  # UMAP's first compile takes minutes on 2 cores
        names = [f"img{i}" for i in range(6)]
        return GroupingResult(user, names, np.arange(6) % 2, np.zeros((6, 2)), 2, k, "lite0-p1",
                              skipped=["broken1", "broken2"],
                              skip_reasons={"broken1": "not a readable image (truncated)", "broken2": "file is empty"})

    monkeypatch.setattr(api, "compute_grouping", grouped)
    assert cli(["group", "-w", str(fresh_ws.root), "--user", "id1", "--k", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 skipped (no group):" in out
    assert "skipped broken1: not a readable image (truncated); fix or remove the file" in out
    assert "skipped broken2: file is empty; fix or remove the file" in out


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1e-05", 1e-5), ("0.000_5", 5e-4), ("0.005", 0.005),
                                         ("2E-3", 2e-3)])
def test_learning_rates_in_any_python_or_yaml_notation(text: str, value: float) -> None:
    assert build_config("tiny", [f"train.lr={text}"]).train.lr == pytest.approx(value)


def test_whole_numbers_accept_underscores_and_exponents_but_not_fractions() -> None:
    assert build_config("tiny", ["train.steps=1_000"]).train.steps == 1000
    assert build_config("tiny", ["train.steps=1e3"]).train.steps == 1000
    with pytest.raises(Exception, match=r"train.steps: expected a whole number .* got 2.5"):
        build_config("tiny", ["train.steps=2.5"])
    with pytest.raises(Exception, match=r"train.lr: expected a number .* got 'fast'"):
        build_config("tiny", ["train.lr=fast"])


def test_the_app_form_accepts_what_it_displays(fresh_ws: Workspace) -> None:
    """The form's Number shows 0.00001 as '1e-05'; the launch must take it (it was refused before)."""
    from pss.api.launch_form import LaunchRequest, validate_launch

    config = validate_launch(fresh_ws, LaunchRequest(user="id1", method="source_only", preset="tiny", lr=0.00001))
    assert config.train.lr == pytest.approx(1e-5)
    config = validate_launch(fresh_ws, LaunchRequest(user="id1", method="source_only", preset="tiny", lr="5e-4"))
    assert config.train.lr == pytest.approx(5e-4)


@pytest.mark.parametrize("override, message", [
    ("train.seed=1180591620717411303424", "train.seed must be between 0 and 4294967295"),
    ("train.batch_size=100000", "train.batch_size must be between 1 and 1024"),
    ("grouping.k=1000000", "grouping.k must be between 1 and 10000"),
    ("train.steps=10000000000", "train.steps must be between 1 and 1000000"),
    ("train.lr=100", "train.lr must be between"),
])
def test_cli_refuses_out_of_range_settings_before_anything_starts(fresh_ws: Workspace, capsys, override: str,
                                                                   message: str) -> None:
    assert cli(["train", "-w", str(fresh_ws.root), *TRAIN, "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not list(fresh_ws.runs.glob("*/run.json"))  # no run was created


def test_read_only_runs_folder_gives_advice_not_a_bare_errno(fresh_ws: Workspace, capsys, monkeypatch) -> None:
    # Root ignores permission bits, so the fault is planted where the run store creates a run directory.
    import pss.runs.store as store

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(fresh_ws.runs / "new-run"))

    monkeypatch.setattr(store.RunStore, "create_run", refuse)
    assert cli(["train", "-w", str(fresh_ws.root), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "Operation not permitted" in err and "make it writable again or use another workspace" in err
    assert "Traceback" not in err


def test_doctor_and_loader_agree_on_the_bad_value_message(fresh_ws: Workspace) -> None:
    from pss.data.image_io import load_mask
    from pss.data.validate import check_root
    from pss.errors import DatasetError

    path = _source_masks(fresh_ws)[0]
    mask = read_label_png(path)
    mask[0, 0] = 200
    write_label_png(path, mask)
    problems = [p for p in check_root(fresh_ws.data) if p.path == path]
    assert [p.kind for p in problems] == ["bad_label_values"]
    with pytest.raises(DatasetError) as raised:
        load_mask(path, mask.shape)
    assert problems[0].message in str(raised.value) and str(path) in str(raised.value)
    assert np.array_equal(read_label_png(path), mask)  # reading never rewrites the file
