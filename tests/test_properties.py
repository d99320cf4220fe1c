"""Property-based tests (hypothesis): annotation parsers never fail except with a UserError and never emit a bad box;
geometry (boxes, rotated boxes, polygons/masks) keeps its invariants; NMS equals a brute-force greedy reference.

Example counts are kept modest so the file runs in seconds on 2 shared cores.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rtmdet_edge.data.coco import CocoDataset  # noqa: E402
from rtmdet_edge.data.dota import parse_label_file  # noqa: E402
from rtmdet_edge.data.sample import SkipLog, clip_polygon, points_to_rbox_le90, rbox_corners  # noqa: E402
from rtmdet_edge.errors import UserError  # noqa: E402
from rtmdet_edge.geometry.boxes import aligned_giou, box_area, box_iou, distance2bbox  # noqa: E402
from rtmdet_edge.inference.postprocess import batched_nms, nms  # noqa: E402

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FOLDER = Path(tempfile.mkdtemp(prefix="rtmdet_props_"))
(_FOLDER / "images").mkdir()
cv2.imwrite(str(_FOLDER / "images" / "a.png"), np.zeros((30, 40, 3), np.uint8))
cv2.imwrite(str(_FOLDER / "images" / "b.png"), np.zeros((50, 20, 3), np.uint8))

# ---------------------------------------------------------------------------------------------------------------------
# COCO: arbitrary JSON values where the fields are; the parser either builds a dataset whose boxes are all valid or
# raises UserError, and nothing else.
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=6))
maybe = lambda strategy: st.one_of(strategy, json_scalar)  # noqa: E731
number = st.one_of(st.integers(-50, 80), st.floats(-50, 80, allow_nan=False))
image_entry = st.fixed_dictionaries(
    {"id": maybe(st.integers(0, 4)), "file_name": maybe(st.sampled_from(["a.png", "b.png", "c.png", "../a.png", "/etc/passwd", ""]))},
    optional={"width": maybe(st.integers(1, 60)), "height": maybe(st.integers(1, 60))},
)
ann_entry = st.fixed_dictionaries(
    {
        "image_id": maybe(st.integers(0, 4)),
        "category_id": maybe(st.integers(0, 3)),
        "bbox": maybe(st.lists(maybe(number), min_size=0, max_size=5)),
    },
    optional={"iscrowd": st.sampled_from([0, 1]), "id": st.integers(1, 100)},
)
coco_doc = st.fixed_dictionaries(
    {
        "images": maybe(st.lists(maybe(image_entry), max_size=4)),
        "categories": maybe(st.lists(maybe(st.fixed_dictionaries({"id": maybe(st.integers(1, 3))})), max_size=3)),
    },
    optional={"annotations": maybe(st.lists(maybe(ann_entry), max_size=6))},
)


@FAST
@given(doc=coco_doc)
def test_coco_parser_only_fails_with_user_error_and_only_yields_valid_boxes(doc) -> None:
    ann = _FOLDER / "ann.json"
    ann.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = CocoDataset(ann, _FOLDER / "images")
        except UserError:
            return
        for i in range(len(ds)):
            s = ds.load_raw(i)
            h, w = s["image"].shape[:2]
            boxes = s["boxes"]
            assert boxes.dtype == np.float32 and boxes.shape == (len(s["labels"]), 4)
            assert np.isfinite(boxes).all()
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert ((boxes[:, 2] - boxes[:, 0]) > ds.min_size).all() and ((boxes[:, 3] - boxes[:, 1]) > ds.min_size).all()
            assert ((s["labels"] >= 0) & (s["labels"] < ds.num_classes)).all()
            assert Path(s["path"]).resolve().parent == (_FOLDER / "images").resolve()


# ---------------------------------------------------------------------------------------------------------------------
# DOTA label files: arbitrary lines built from plausible and implausible tokens.
token = st.one_of(
    st.integers(-20, 120).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["plane", "ship", "car", "small-vehicle", "0", "1", "2", "", "gsd:0.5", "imagesource:x", "\x00"]),
    st.text(max_size=4),
)
label_line = st.lists(token, min_size=0, max_size=11).map(" ".join)
CLASSES = {"plane": 0, "ship": 1, "small-vehicle": 2}


@FAST
@given(lines=st.lists(label_line, max_size=8))
def test_dota_parser_skips_bad_lines_and_keeps_only_valid_quads(lines) -> None:
    path = _FOLDER / "label.txt"
    path.write_text("\n".join(lines), errors="replace")
    skips = SkipLog(max_lines=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corners, labels, difficult = parse_label_file(path, CLASSES, skips)
    n = len(labels)
    assert corners.shape == (n, 4, 2) and difficult.shape == (n,) and labels.dtype == np.int64
    assert np.isfinite(corners).all() and set(labels.tolist()) <= set(CLASSES.values())
    assert all(cv2.contourArea(c) > 0 for c in corners)
    try:  # strict mode (no SkipLog): the same file either parses identically or raises UserError
        strict = parse_label_file(path, CLASSES)
        assert np.array_equal(strict[0], corners) and skips.total() == 0
    except UserError:
        assert skips.total() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Geometry.
coord = st.floats(0, 500, allow_nan=False, width=32)


@st.composite
def boxes_xyxy(draw, min_n: int = 0, max_n: int = 12) -> torch.Tensor:
    n = draw(st.integers(min_n, max_n))
    rows = []
    for _ in range(n):
        x1, y1 = draw(coord), draw(coord)
        w, h = draw(st.floats(0.5, 200, width=32)), draw(st.floats(0.5, 200, width=32))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float32).reshape(n, 4)


def _iou_reference(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-6)


@FAST
@given(a=boxes_xyxy(1), b=boxes_xyxy(1))
def test_iou_is_symmetric_bounded_and_matches_a_scalar_reference(a, b) -> None:
    iou = box_iou(a, b)
    assert torch.allclose(iou, box_iou(b, a).T, atol=1e-6)
    assert ((iou >= 0) & (iou <= 1 + 1e-6)).all()
    ref = np.array([[_iou_reference(x, y) for y in b.double().numpy()] for x in a.double().numpy()])
    np.testing.assert_allclose(iou.numpy(), ref, atol=1e-4)
    assert torch.allclose(box_iou(a, a).diagonal(), torch.ones(len(a)), atol=1e-5)
    assert (box_area(a) > 0).all()


@FAST
@given(a=boxes_xyxy(1), b=boxes_xyxy(1))
def test_giou_bounds_and_relation_to_iou(a, b) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    giou = aligned_giou(a, b)
    iou = box_iou(a, b).diagonal()
    assert ((giou >= -1 - 1e-5) & (giou <= iou + 1e-5)).all()
    assert torch.allclose(aligned_giou(a, a), torch.ones(n), atol=1e-5)


@FAST
@given(points=st.lists(st.tuples(coord, coord), min_size=1, max_size=8), d=st.lists(st.floats(0, 100, width=32), min_size=4, max_size=4))
def test_distance_decoding_puts_the_point_inside_its_box(points, d) -> None:
    p = torch.tensor(points, dtype=torch.float32)
    dist = torch.tensor([d] * len(points), dtype=torch.float32)
    boxes = distance2bbox(p, dist)
    assert (boxes[:, 0] <= p[:, 0] + 1e-3).all() and (boxes[:, 2] >= p[:, 0] - 1e-3).all()
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], dist[:, 0] + dist[:, 2], atol=1e-2)


@FAST
@given(
    cx=st.floats(-100, 100), cy=st.floats(-100, 100), w=st.floats(1, 80), h=st.floats(1, 80),
    angle=st.floats(-np.pi, np.pi),
)  # fmt: skip
def test_rotated_box_round_trip_through_corners_is_the_same_rectangle(cx, cy, w, h, angle) -> None:
    rbox = np.array([[cx, cy, w, h, angle]], np.float32)
    back = points_to_rbox_le90(rbox_corners(rbox)[0])
    assert -np.pi / 2 - 1e-6 <= back[4] < np.pi / 2 + 1e-6
    assert back[2] >= back[3] - 1e-3  # le90: w is the longer side
    np.testing.assert_allclose(back[:2], [cx, cy], atol=2e-2 * max(1, abs(cx), abs(cy)) ** 0.5)
    np.testing.assert_allclose(sorted(back[2:4]), sorted([w, h]), rtol=1e-3, atol=2e-2)
    # same corners as a set (the (w, h, a) vs (h, w, a + pi/2) ambiguity is one rectangle)
    a, b = rbox_corners(rbox)[0], rbox_corners(back[None])[0]
    dists = np.linalg.norm(a[:, None] - b[None], axis=-1).min(1)
    assert dists.max() < 5e-2 * max(1.0, w, h) ** 0.5


@FAST
@given(
    pts=st.lists(st.tuples(st.floats(-50, 150), st.floats(-50, 150)), min_size=3, max_size=10),
    rect=st.tuples(st.floats(0, 40), st.floats(0, 40), st.floats(50, 100), st.floats(50, 100)),
)
def test_polygon_clipping_stays_inside_and_never_grows(pts, rect) -> None:
    x1, y1, x2, y2 = rect
    hull = cv2.convexHull(np.asarray(pts, np.float32))  # convex: area is well defined
    assume(hull is not None)  # OpenCV returns no hull for coincident points (e.g. (0, 0), (0, -0.0), (0, 0))
    poly = hull.reshape(-1, 2)
    clipped = clip_polygon(poly, x1, y1, x2, y2)
    if len(clipped):
        assert (clipped[:, 0] >= x1 - 1e-3).all() and (clipped[:, 0] <= x2 + 1e-3).all()
        assert (clipped[:, 1] >= y1 - 1e-3).all() and (clipped[:, 1] <= y2 + 1e-3).all()
        assert abs(cv2.contourArea(clipped)) <= abs(cv2.contourArea(poly)) + 1e-2
    # and against rasterised masks: clipped mask == mask AND rectangle (up to edge pixels)
    size = 160
    m_poly = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m_poly, [np.round(poly + 50).astype(np.int32)], 1)
    m_rect = np.zeros_like(m_poly)
    m_rect[int(np.ceil(y1 + 50)) : int(y2 + 50), int(np.ceil(x1 + 50)) : int(x2 + 50)] = 1
    m_clip = np.zeros_like(m_poly)
    if len(clipped) >= 3:
        cv2.fillPoly(m_clip, [np.round(clipped + 50).astype(np.int32)], 1)
    diff = np.logical_xor(m_clip, m_poly & m_rect).sum()
    perimeter = 2 * size + cv2.arcLength(poly, True) + 4
    assert diff <= 2 * perimeter


# ---------------------------------------------------------------------------------------------------------------------
# NMS against brute force.
def _greedy_nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(_iou_reference(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


@st.composite
def detections(draw):
    boxes = draw(boxes_xyxy(0, 40))
    n = len(boxes)
    # distinct scores: ties are ordered by index in both implementations, but keep the reference unambiguous
    scores = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return boxes, torch.tensor(scores, dtype=torch.float32) / 10_000, torch.tensor(labels, dtype=torch.long)


@settings(max_examples=60, deadline=None)
@given(det=detections(), thr=st.sampled_from([0.3, 0.5, 0.65, 0.9]), block=st.sampled_from([3, 7, 512]))
def test_nms_equals_brute_force_greedy(det, thr, block) -> None:
    boxes, scores, labels = det
    got = nms(boxes, scores, thr, block=block).tolist()
    want = _greedy_nms_reference(boxes.double().numpy(), scores.numpy(), thr)
    # float32 vs float64 IoU may differ right at the threshold: only then may the answers differ
    if got != want:
        iou = box_iou(boxes, boxes).numpy()
        assert np.isclose(iou, thr, atol=1e-5).any(), (got, want)
    got_cls = batched_nms(boxes, scores, labels, thr).tolist()
    per_class = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        per_class += [int(idx[k]) for k in _greedy_nms_reference(boxes[idx].double().numpy(), scores[idx].numpy(), thr)]
    per_class.sort(key=lambda i: (-float(scores[i]), i))
    if got_cls != per_class:
        assert np.isclose(box_iou(boxes, boxes).numpy(), thr, atol=1e-4).any(), (got_cls, per_class)
