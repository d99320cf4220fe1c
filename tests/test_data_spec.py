"""build_dataset: every --data form, and clear errors for the rest."""

from __future__ import annotations

import pytest
from _data_helpers import SHARED

from rtmdet_edge.data import CocoDataset, DotaDataset, SyntheticDataset, build_dataset, export_coco
from rtmdet_edge.errors import UserError

DATA = SHARED / "data"
needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not found (shared data is beside the repo)")


def test_synthetic_forms():
    ds = build_dataset("synthetic")
    assert isinstance(ds, SyntheticDataset) and len(ds) == 2000 and len(ds.class_names) == 8
    ds = build_dataset("synthetic:37", split="val", num_classes=5, imgsz=320)
    assert len(ds) == 37 and ds.split == "val" and ds.imgsz == (320, 320) and len(ds.class_names) == 5
    with pytest.raises(UserError):
        build_dataset("synthetic:many")


def test_json_folder_and_yaml_forms(tmp_path):
    src = SyntheticDataset(3, num_classes=4, imgsz=128)
    export_coco(src, tmp_path / "annotations" / "instances_train.json", tmp_path / "images" / "train")
    a = build_dataset(tmp_path / "annotations" / "instances_train.json")  # images guessed: ../images/train
    b = build_dataset(tmp_path)  # COCO root
    c = build_dataset(tmp_path / "annotations" / "instances_train.json", images=tmp_path / "images" / "train")
    assert all(isinstance(d, CocoDataset) and len(d) == 3 for d in (a, b, c))
    (tmp_path / "data.yaml").write_text(
        "train: {ann_file: annotations/instances_train.json, images: images/train}\n"
        "val: annotations/instances_train.json\nnames: [ellipse, rectangle, triangle, star]\n"
    )
    d = build_dataset(tmp_path / "data.yaml", split="val")
    assert isinstance(d, CocoDataset) and d.class_names == ["ellipse", "rectangle", "triangle", "star"]
    assert len(build_dataset(tmp_path / "data.yaml", num_classes=4)) == 3
    with pytest.raises(UserError, match="classes"):
        build_dataset(tmp_path / "data.yaml", num_classes=80)
    with pytest.raises(UserError, match="test"):
        build_dataset(tmp_path / "data.yaml", split="test")
    (tmp_path / "syn.yaml").write_text("train: synthetic:5\nval: synthetic:2\nnames: [a, b, c]\n")
    e = build_dataset(tmp_path / "syn.yaml", split="val")
    assert isinstance(e, SyntheticDataset) and len(e) == 2 and len(e.class_names) == 3


@needs_shared
def test_shared_data_forms():
    coco = build_dataset(DATA / "coco128-seg")
    assert isinstance(coco, CocoDataset) and len(coco) == 128
    with pytest.warns(UserWarning, match="no val annotations"):
        assert len(build_dataset(DATA / "coco128-seg", split="val")) == 128
    json_form = build_dataset(DATA / "coco128-seg" / "annotations" / "instances_train2017.json")
    assert len(json_form) == 128
    dota = build_dataset(DATA / "dota8", split="val")
    assert isinstance(dota, DotaDataset) and len(dota) == 4
    yaml_form = build_dataset(DATA / "dota8" / "dota8.yaml", split="train")
    assert isinstance(yaml_form, DotaDataset) and yaml_form.class_names[1] == "ship"  # the YAML's names win
    assert sum(len(yaml_form.load_raw(i)["labels"]) for i in range(4)) > 0


@pytest.mark.parametrize("spec", ["nope/does_not_exist.json", "nope.yaml", "README.md"])
def test_bad_specs(spec, tmp_path):
    with pytest.raises(UserError):
        build_dataset(tmp_path / spec if spec != "README.md" else __file__)
    with pytest.raises(UserError):
        build_dataset(tmp_path)  # an empty folder
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(UserError):
        build_dataset(tmp_path / "bad.yaml")
