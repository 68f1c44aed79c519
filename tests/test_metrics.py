"""Metrics against hand-computed values (see the comments for the arithmetic)."""
from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

import pss.metrics as metrics
from pss.metrics import (ConfusionMatrix, MIoUConvention, SegReport, evaluate_pairs, foreground_iou,
                         per_image_iou)

# target / pred used by most tests. Pixel (2, 0) is ignored (255); its prediction must not count.
TARGET = np.array([[0, 0, 1],
                   [0, 1, 1],
                   [255, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1],
                 [0, 1, 1],
                 [2, 2, 0]], dtype=np.int64)
# (t, p) over the 8 valid pixels: (0,0) x2, (0,1), (1,1) x3, (2,2), (2,0)
HAND_MATRIX = np.array([[2, 1, 0],
                        [0, 3, 0],
                        [1, 0, 1]])
# IoU_0 = 2/(3+3-2) = 0.5, IoU_1 = 3/(3+4-3) = 0.75, IoU_2 = 1/(2+1-1) = 0.5
HAND_IOU = np.array([0.5, 0.75, 0.5])


def test_matrix_ignores_255_and_matches_hand_count():
    cm = ConfusionMatrix(num_classes=3).update(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, HAND_MATRIX)
    np.testing.assert_allclose(cm.iou("present"), HAND_IOU)
    assert cm.pixel_accuracy() == pytest.approx(6 / 8)


def test_out_of_range_target_is_ignored():
    target = TARGET.copy()
    target[0, 0] = 30  # not a class, not 255: ignored like 255
    cm = ConfusionMatrix(num_classes=3).update(PRED, target)
    expected = HAND_MATRIX.copy()
    expected[0, 0] -= 1
    np.testing.assert_array_equal(cm.matrix, expected)


def test_absent_class_pss_vs_present_convention():
    # 4 classes: class 3 is absent from both GT and prediction.
    cm = ConfusionMatrix(num_classes=4).update(PRED, TARGET)
    pss_iou, present_iou = cm.iou(MIoUConvention.PSS), cm.iou("present")
    np.testing.assert_allclose(pss_iou, [0.5, 0.75, 0.5, 0.0])
    assert np.isnan(present_iou[3])
    np.testing.assert_allclose(present_iou[:3], HAND_IOU)
    assert cm.miou("pss") == pytest.approx(1.75 / 4)          # 0.4375: absent class counted as 0
    assert cm.miou("present") == pytest.approx(1.75 / 3)      # 0.58333: absent class skipped
    # default 21 VOC classes: the PSS mean divides by 21
    assert ConfusionMatrix().update(PRED, TARGET).miou("pss") == pytest.approx(1.75 / 21)


def test_unknown_convention_is_an_error():
    with pytest.raises(ValueError, match="convention"):
        ConfusionMatrix(3).update(PRED, TARGET).miou("voc")


def test_empty_matrix():
    cm = ConfusionMatrix(num_classes=3)
    assert cm.miou("pss") == 0.0
    assert math.isnan(cm.miou("present"))
    assert math.isnan(cm.pixel_accuracy())


def test_invalid_inputs_raise_value_error():
    cm = ConfusionMatrix(num_classes=3)
    bad_pred = PRED.copy()
    bad_pred[0, 0] = 3
    with pytest.raises(ValueError, match="predictions"):
        cm.update(bad_pred, TARGET)
    with pytest.raises(ValueError, match="predictions"):
        cm.update(-np.ones((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        cm.update(PRED.astype(np.float32), TARGET)
    with pytest.raises(ValueError, match="shape"):
        cm.update(PRED[:2], TARGET)
    assert cm.matrix.sum() == 0  # nothing was half-added


def test_numpy_and_torch_inputs_agree_any_int_dtype():
    a = ConfusionMatrix(3).update(PRED.astype(np.uint16), TARGET.astype(np.int32))
    b = ConfusionMatrix(3).update(torch.from_numpy(PRED).to(torch.int32), torch.from_numpy(TARGET))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, HAND_MATRIX)


def test_batch_equals_per_image_accumulation_and_merge():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 5, size=(4, 6, 7))
    targets = rng.integers(0, 5, size=(4, 6, 7))
    targets[rng.random(targets.shape) < 0.2] = 255
    batch = ConfusionMatrix(5).update(torch.from_numpy(preds), torch.from_numpy(targets))
    single = ConfusionMatrix(5)
    for p, t in zip(preds, targets):
        single.update(p, t)
    np.testing.assert_array_equal(batch.matrix, single.matrix)
    first, second = ConfusionMatrix(5).update(preds[:2], targets[:2]), ConfusionMatrix(5).update(preds[2:], targets[2:])
    np.testing.assert_array_equal(first.merge(second).matrix, batch.matrix)
    np.testing.assert_array_equal(ConfusionMatrix(5).merge(batch).matrix, batch.matrix)  # merge into empty
    with pytest.raises(ValueError, match="merge"):
        batch.merge(ConfusionMatrix(4))
    batch.reset()
    assert batch.matrix.sum() == 0


def test_matches_sklearn_on_random_maps():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 21, size=(3, 17, 13))
    target = rng.integers(0, 21, size=(3, 17, 13))
    target[rng.random(target.shape) < 0.1] = 255
    valid = target != 255
    expected = sk_confusion_matrix(target[valid], pred[valid], labels=list(range(21)))
    cm = ConfusionMatrix().update(pred, target)
    np.testing.assert_array_equal(cm.matrix, expected)
    inter = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - inter
    np.testing.assert_allclose(cm.iou("present"), np.where(union > 0, inter / np.maximum(union, 1), np.nan))


def test_device_is_passed_not_hard_coded():
    source = inspect.getsource(metrics)
    assert ".cuda(" not in source and '"cuda"' not in source
    cm = ConfusionMatrix(3, device=torch.device("cpu")).update(torch.from_numpy(PRED), TARGET)
    np.testing.assert_array_equal(cm.matrix, HAND_MATRIX)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counts_accumulate_on_gpu():
    device = torch.device("cuda")
    cm = ConfusionMatrix(3).update(torch.from_numpy(PRED).to(device), torch.from_numpy(TARGET).to(device))
    assert cm._counts.device.type == "cuda"
    np.testing.assert_array_equal(cm.matrix, HAND_MATRIX)


def test_foreground_iou_hand_values():
    # p>0: (0,1),(0,2),(1,1),(1,2),(2,0),(2,1); t>0 incl. 255: (0,2),(1,1),(1,2),(2,0),(2,1),(2,2)
    # union = 7 pixels; inter (p == t, p > 0) = (0,2),(1,1),(1,2),(2,1) = 4
    assert foreground_iou(PRED, TARGET) == pytest.approx(4 / 7)
    # without the 255-as-foreground oddity pixel (2,0) leaves the union: 4/6
    assert foreground_iou(PRED, TARGET, ignore_as_foreground=False) == pytest.approx(4 / 6)


def test_foreground_iou_255_counts_as_foreground_and_empty_union():
    pred = np.array([[1, 0], [0, 0]])
    target = np.array([[1, 255], [0, 0]])
    assert foreground_iou(pred, target) == pytest.approx(0.5)           # union = {(0,0), (0,1)}
    assert foreground_iou(pred, target, ignore_as_foreground=False) == pytest.approx(1.0)
    zeros = np.zeros((3, 3), dtype=np.int64)
    assert foreground_iou(zeros, zeros) == 0.0                            # empty union -> 0
    assert foreground_iou(zeros, np.full((3, 3), 255), ignore_as_foreground=False) == 0.0
    # class-aware: a foreground pixel with the wrong foreground class is in the union only
    assert foreground_iou(np.array([[2, 1]]), np.array([[1, 1]])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        foreground_iou(PRED[None], TARGET[None])


def test_per_image_iou_both_conventions():
    assert per_image_iou(PRED, TARGET) == pytest.approx(1.75 / 3)
    assert per_image_iou(PRED, TARGET, "pss") == pytest.approx(1.75 / 21)
    assert math.isnan(per_image_iou(np.zeros((2, 2), int), np.full((2, 2), 255)))


def test_evaluate_pairs_report_and_json_round_trip():
    second_pred = np.array([[0, 0], [3, 3]])
    second_target = np.array([[0, 0], [3, 0]])
    report = evaluate_pairs([("a", PRED, TARGET), ("b", torch.from_numpy(second_pred), second_target)],
                            num_classes=4)
    # pooled matrix = HAND_MATRIX padded to 4 classes + image b, whose (t, p) pixels are (0,0), (0,0), (3,3), (0,3)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[:3, :3] = HAND_MATRIX
    expected[0, 0] += 2
    expected[3, 3] += 1
    expected[0, 3] += 1
    assert report.confusion == expected.tolist()
    # IoU: c0 = 4/(6+5-4) = 4/7, c1 = 0.75, c2 = 0.5, c3 = 1/(1+2-1) = 0.5
    hand = [4 / 7, 0.75, 0.5, 0.5]
    np.testing.assert_allclose(report.per_class_iou["pss"], hand)
    assert report.miou["pss"] == pytest.approx(sum(hand) / 4)
    assert report.miou["present"] == pytest.approx(sum(hand) / 4)
    # image b FIoU: p>0 = {(1,0),(1,1)}, t>0 = {(1,0)} -> union 2, inter 1 -> 0.5
    assert report.images[1].fiou == pytest.approx(0.5)
    assert report.fiou == pytest.approx((4 / 7 + 0.5) / 2)
    assert report.num_images == 2 and report.images[0].name == "a"
    # image b per-image present mIoU: c0 = 2/3, c3 = 1/2
    assert report.images[1].miou == pytest.approx((2 / 3 + 0.5) / 2)
    assert report.pixel_accuracy == pytest.approx((6 + 3) / 12)
    text = json.dumps(report.to_dict(), allow_nan=False)
    again = SegReport.from_dict(json.loads(text))
    assert again == report


def test_report_nan_becomes_none():
    report = evaluate_pairs([("x", np.zeros((2, 2), int), np.full((2, 2), 255))], num_classes=2)
    data = report.to_dict()
    assert data["miou"]["present"] is None and data["per_class_iou"]["present"] == [None, None]
    assert data["miou"]["pss"] == 0.0 and data["images"][0]["miou"] is None
    back = SegReport.from_dict(data)
    assert math.isnan(back.miou["present"]) and back.miou["pss"] == 0.0
    empty = evaluate_pairs([], num_classes=2)
    assert empty.num_images == 0 and math.isnan(empty.fiou)
