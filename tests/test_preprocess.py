from __future__ import annotations

import numpy as np
import pytest

from rtmdet_edge.inference.preprocess import letterbox, normalize, normalize_numpy


@pytest.mark.parametrize("shape", [(600, 512), (100, 640), (480, 1000), (640, 640), (7, 3)])
def test_letterbox_keeps_ratio_and_pads_bottom_right(shape) -> None:
    img = np.full((*shape, 3), 7, np.uint8)
    out, meta = letterbox(img, 640)
    assert out.shape == (640, 640, 3)
    h, w = meta.resized_shape
    assert max(h, w) == 640
    assert (out[:h, :w] == 7).all() and (out[h:] == 114).all() and (out[:, w:] == 114).all()
    assert meta.scale_factor == pytest.approx((w / shape[1], h / shape[0]))


def test_official_scale_factor() -> None:
    _, meta = letterbox(np.zeros((600, 512, 3), np.uint8), 640)
    assert meta.scale_factor == (1.06640625, 640 / 600) and meta.resized_shape == (640, 546)


def test_bad_images_raise() -> None:
    with pytest.raises(ValueError):
        letterbox(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError):
        letterbox(np.zeros((5, 5), np.uint8))


def test_normalize_torch_equals_numpy() -> None:
    img = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    # the numpy path folds the division into a multiply: equal to float32 rounding, not bit-exact
    np.testing.assert_allclose(normalize(img).numpy(), normalize_numpy(img), rtol=0, atol=1e-6)
