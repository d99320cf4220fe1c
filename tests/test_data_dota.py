"""DotaDataset on dota8 and on hand-made label files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _data_helpers import SHARED

from rtmdet_edge.data import DOTA_CLASSES, DotaDataset
from rtmdet_edge.data.sample import rbox_corners
from rtmdet_edge.errors import UserError

DOTA8 = SHARED / "data" / "dota8"


@pytest.mark.skipif(not DOTA8.is_dir(), reason=f"{DOTA8} not found (shared data is beside the repo)")
def test_dota8_loads_133_objects():
    total, names = 0, []
    for split in ("train", "val"):
        ds = DotaDataset(DOTA8, split)
        assert len(ds) == 4 and ds.class_names == list(DOTA_CLASSES)
        for i in range(len(ds)):
            s = ds.load_raw(i)
            n = len(s["labels"])
            total += n
            names += [ds.class_names[l] for l in s["labels"]]
            assert s["image"].shape == (1024, 1024, 3)
            assert s["rboxes"].shape == (n, 5) and s["boxes"].shape == (n, 4) and s["difficult"].shape == (n,)
            a = s["rboxes"][:, 4]
            assert ((a >= -np.pi / 2) & (a < np.pi / 2)).all()
            # minAreaRect encloses the labelled quad: its corners' hull contains the box
            corners = rbox_corners(s["rboxes"])
            assert (corners.min(1) <= s["boxes"][:, :2] + 0.5).all() and (corners.max(1) >= s["boxes"][:, 2:] - 0.5).all()
    assert total == 133
    assert names.count("ship") == 105 and names.count("tennis-court") == 8


def test_label_file_parsing(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labelTxt" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "a.png"), np.zeros((100, 100, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "train" / "b.png"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "labelTxt" / "train" / "a.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.5\n10 10 50 10 50 30 10 30 plane 0\n60 60 70 70 60 80 50 70 ship 1\n"
    )
    with pytest.warns(UserWarning, match="no label file"):
        ds = DotaDataset(tmp_path, "train")
    s = ds.load_raw(0)
    assert s["labels"].tolist() == [0, 6] and s["difficult"].tolist() == [False, True]
    np.testing.assert_allclose(s["rboxes"][0], [30, 20, 40, 20, 0], atol=1e-4)
    np.testing.assert_allclose(abs(s["rboxes"][1][4]), np.pi / 4, atol=1e-4)
    np.testing.assert_allclose(s["boxes"][1], [50, 60, 70, 80])
    assert len(ds.load_raw(1)["labels"]) == 0  # b.png has no label file: background
    (tmp_path / "labelTxt" / "train" / "a.txt").write_text("10 10 50 10 50 30 10 30 car 0\n10 10 50 10 50 30 10 30 ship 0\n")
    with pytest.warns(UserWarning, match="unknown class 'car'"):
        ds = DotaDataset(tmp_path, "train")  # the bad object is dropped with a warning, the rest of the file kept
    assert ds.load_raw(0)["labels"].tolist() == [6] and ds.skipped["unknown class"] == 1
    with pytest.raises(UserError):
        DotaDataset(tmp_path, "val")
