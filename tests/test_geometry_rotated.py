"""Rotated geometry against an independent computation (shapely polygons) on thousands of pairs, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rtmdet_edge.geometry.rotated import (
    corners_to_rbox,
    distance2rbox,
    norm_angle_le90,
    points_in_rboxes,
    rbox_iou,
    rbox_iou_aligned,
    rbox_to_corners,
    regularize_le90,
)

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon  # noqa: E402


def shapely_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference IoU from polygons built from our corners (corners are checked separately below)."""
    out = []
    for p, q in zip(rbox_to_corners(torch.as_tensor(a, dtype=torch.float64)).numpy(),
                    rbox_to_corners(torch.as_tensor(b, dtype=torch.float64)).numpy()):
        pp, qq = Polygon(p), Polygon(q)
        # GEOS's floating overlay can return a whole polygon for two rectangles that only share an edge (seen with
        # shapely 2.2.0); snapping to a 1e-10 grid makes it robust and changes areas by ~1e-10 at most.
        inter = shapely.intersection(pp, qq, grid_size=1e-10).area
        union = pp.area + qq.area - inter
        out.append(inter / union if union > 0 else 0.0)
    return np.asarray(out)


def random_boxes(rng: np.random.Generator, n: int, spread: float = 40.0) -> np.ndarray:
    return np.concatenate(
        [rng.uniform(0, spread, (n, 2)), rng.uniform(0.5, 30, (n, 2)), rng.uniform(-math.pi, math.pi, (n, 1))], 1
    )


def edge_cases(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Identical, nested, touching (shared edge / corner), degenerate (zero w or h), same centre turned, far apart."""
    a = random_boxes(rng, n)
    kinds = rng.integers(0, 7, n)
    b = a.copy()
    for i, k in enumerate(kinds):
        cx, cy, w, h, t = a[i]
        if k == 1:  # nested: smaller, inside, same angle shifted a little
            b[i, 2:4] = a[i, 2:4] * 0.4
            b[i, 0] += 0.2 * w * math.cos(t)
            b[i, 1] += 0.2 * w * math.sin(t)
        elif k == 2:  # touching along the full w-side edge
            b[i, 0] += h * -math.sin(t)
            b[i, 1] += h * math.cos(t)
        elif k == 3:  # touching at one corner
            b[i, 0] += w * math.cos(t) - h * math.sin(t)
            b[i, 1] += w * math.sin(t) + h * math.cos(t)
        elif k == 4:  # degenerate
            b[i, 2 + (i % 2)] = 0.0
        elif k == 5:  # same centre, turned by 90 degrees or a random amount
            b[i, 4] += math.pi / 2 if i % 2 else rng.uniform(-1, 1)
        elif k == 6:  # far apart
            b[i, 0] += 1000
    return a, b


@pytest.fixture(scope="module")
def pairs_with_reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a1, b1 = random_boxes(rng, 3000), random_boxes(rng, 3000)
    a2, b2 = edge_cases(rng, 2000)
    a, b = np.concatenate([a1, a2]), np.concatenate([b1, b2])
    return a, b, shapely_iou(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_iou_matches_shapely_random_and_edge_cases(dtype: torch.dtype, pairs_with_reference) -> None:
    a, b, ref = pairs_with_reference
    ours = rbox_iou_aligned(torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype)).double().numpy()
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert np.abs(ours - ref).max() < tol
    assert (ref > 0).sum() > 1500 and (ref == 0).sum() > 1000  # both regimes are exercised


def test_identical_nested_touching_exact() -> None:
    box = torch.tensor([[100.0, 50.0, 20.0, 8.0, 0.3]])
    assert rbox_iou_aligned(box, box).item() == pytest.approx(1.0, abs=1e-6)
    # same rectangle written as (h, w, a + pi/2) and as a + pi
    alt = torch.tensor([[100.0, 50.0, 8.0, 20.0, 0.3 + math.pi / 2]])
    flip = torch.tensor([[100.0, 50.0, 20.0, 8.0, 0.3 + math.pi]])
    assert rbox_iou_aligned(box, alt).item() == pytest.approx(1.0, abs=1e-5)
    assert rbox_iou_aligned(box, flip).item() == pytest.approx(1.0, abs=1e-5)
    inner = torch.tensor([[100.0, 50.0, 10.0, 4.0, 0.3]])
    assert rbox_iou_aligned(box, inner).item() == pytest.approx(0.25, abs=1e-6)
    t = 0.3
    touching = torch.tensor([[100.0 + 20 * math.cos(t), 50.0 + 20 * math.sin(t), 20.0, 8.0, t]])
    assert rbox_iou_aligned(box, touching).item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_finite_on_all_cases() -> None:
    rng = np.random.default_rng(1)
    a, b = edge_cases(rng, 2000)
    a = np.concatenate([a, random_boxes(rng, 1000)])
    b = np.concatenate([b, random_boxes(rng, 1000)])
    ta = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float32, requires_grad=True)
    iou = rbox_iou_aligned(ta, tb)
    (1 - iou).sum().backward()
    assert torch.isfinite(iou).all()
    assert torch.isfinite(ta.grad).all() and torch.isfinite(tb.grad).all()
    assert ta.grad.abs().sum() > 0


def test_gradient_matches_finite_differences() -> None:
    a = torch.tensor([[10.0, 10.0, 12.0, 6.0, 0.4]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[12.0, 9.0, 10.0, 7.0, -0.2]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: rbox_iou_aligned(x, b), (a,))


def test_pairwise_equals_aligned() -> None:
    rng = np.random.default_rng(2)
    a = torch.tensor(random_boxes(rng, 37), dtype=torch.float64)
    b = torch.tensor(random_boxes(rng, 11), dtype=torch.float64)
    pair = rbox_iou(a, b)
    assert pair.shape == (37, 11)
    ref = shapely_iou(a.repeat_interleave(11, 0).numpy(), b.repeat(37, 1).numpy()).reshape(37, 11)
    np.testing.assert_allclose(pair.numpy(), ref, atol=1e-9)
    assert rbox_iou(a[:0], b).shape == (0, 11)


def test_corners_round_trip_and_le90() -> None:
    rng = np.random.default_rng(3)
    boxes = torch.tensor(random_boxes(rng, 500), dtype=torch.float64)
    reg = regularize_le90(boxes)
    assert (reg[:, 2] >= reg[:, 3]).all()
    assert ((reg[:, 4] >= -math.pi / 2) & (reg[:, 4] < math.pi / 2)).all()
    # regularising never changes the rectangle
    assert torch.allclose(rbox_iou_aligned(boxes, reg), torch.ones(500, dtype=torch.float64), atol=1e-9)
    back = corners_to_rbox(rbox_to_corners(boxes))
    assert torch.allclose(back, reg, atol=1e-9)
    # corners are the polygon shapely sees: area w*h
    areas = np.array([Polygon(c).area for c in rbox_to_corners(boxes).numpy()])
    np.testing.assert_allclose(areas, (boxes[:, 2] * boxes[:, 3]).numpy(), rtol=1e-9)
    assert torch.allclose(norm_angle_le90(torch.tensor([math.pi / 2, -math.pi / 2, 3.0])),
                          torch.tensor([-math.pi / 2, -math.pi / 2, 3.0 - math.pi]))


def test_distance2rbox_and_points_inside() -> None:
    points = torch.tensor([[10.0, 20.0]])
    # l, t, r, b = 2, 1, 6, 3 at angle 0: box x in [8, 16], y in [19, 23]
    box = distance2rbox(points, torch.tensor([[2.0, 1.0, 6.0, 3.0]]), torch.tensor([[0.0]]))
    assert torch.allclose(box, torch.tensor([[12.0, 21.0, 8.0, 4.0, 0.0]]))
    # turned by pi/2: the offset (2, 1) turns to (-1, 2)
    box = distance2rbox(points, torch.tensor([[2.0, 1.0, 6.0, 3.0]]), torch.tensor([[math.pi / 2]]))
    assert torch.allclose(box[:, :4], torch.tensor([[9.0, 22.0, 8.0, 4.0]]), atol=1e-5)
    assert box[0, 4].item() == pytest.approx(-math.pi / 2)
    rb = torch.tensor([[0.0, 0.0, 10.0, 4.0, math.pi / 4]])
    pts = torch.tensor([[0.0, 0.0], [3.0, 3.0], [3.0, -3.0], [4.9 / math.sqrt(2), 4.9 / math.sqrt(2)]])
    inside = points_in_rboxes(pts, rb)[:, 0].tolist()
    assert inside == [True, True, False, True]
