"""Turn a --data SPEC into a dataset.

Accepted forms:
    synthetic | synthetic:N           procedural shapes (N images; default 2000 train / 200 val)
    study | study:N                   the gap study's easier synthetic task: 4 classes, at most 8 objects, less
                                      clutter, no objects under 16 px (rtmdet_edge.data.synthetic.STUDY)
    easy | easy:N                     the Ins/R learning curves' task: 3 classes, at most 4 objects, solid colours,
                                      no clutter, no objects under 24 px (rtmdet_edge.data.synthetic.EASY)
    path/to/instances.json            COCO; images from --images or a sibling images folder
    path/to/folder                    DOTA root (has labelTxt*/) or COCO root (annotations/instances_*.json + images/)
    path/to/data.yaml                 train:/val:/test: entries relative to the YAML (or to its `path:`), names:
A YAML entry is a COCO json, a DOTA root or its images/<split> folder, a COCO root, or a mapping
{ann_file: ..., images: ...}; `names:` (list or {id: name}) overrides DOTA class names and checks COCO ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rtmdet_edge.data.coco import CocoDataset
from rtmdet_edge.data.dota import DotaDataset, find_label_dir
from rtmdet_edge.data.sample import DetectionDataset
from rtmdet_edge.data.synthetic import SyntheticDataset
from rtmdet_edge.errors import UserError

SYNTHETIC_DEFAULT_IMAGES = {"train": 2000, "val": 200, "test": 200}
SYNTHETIC_KINDS = ("synthetic", "study", "easy")


def _guess_images_dir(ann_file: Path, split: str) -> Path:
    """instances_train2017.json -> ../images/train2017, ../images, ../train2017, ./images (first that exists)."""
    stem = ann_file.stem.split("_", 1)[-1] if "_" in ann_file.stem else split
    base = ann_file.parent
    candidates = [
        base.parent / "images" / stem,
        base / "images" / stem,
        base.parent / "images",
        base / "images",
        base.parent / stem,
        base / stem,
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise UserError(
        f"cannot find the images of {ann_file}: tried {', '.join(str(c) for c in candidates[:4])}; pass --images"
    )


def _coco_root_json(root: Path, split: str) -> Path:
    jsons = sorted((root / "annotations").glob("instances_*.json"))
    if not jsons:
        raise UserError(f"{root} has no annotations/instances_*.json")
    for j in jsons:
        if j.stem.startswith(f"instances_{split}"):
            return j
    if len(jsons) == 1:
        warnings.warn(f"{root} has no {split} annotations; using {jsons[0].name} for the {split} split")
        return jsons[0]
    raise UserError(f"{root}/annotations has no instances_{split}*.json (found {', '.join(j.name for j in jsons)})")


def _from_path(path: Path, split: str, images: str | Path | None, names: list[str] | None, **kw: Any) -> DetectionDataset:
    if path.is_file() and path.suffix == ".json":
        return CocoDataset(path, Path(images) if images else _guess_images_dir(path, split), **kw)
    if path.is_dir():
        if find_label_dir(path, split) is not None:
            return DotaDataset(path, split, class_names=names, **kw)
        # Ultralytics-style entry: root/images/<split> -> DOTA root `root` if it has labelTxt*/<split>.
        if path.parent.name == "images" and find_label_dir(path.parent.parent, path.name) is not None:
            return DotaDataset(path.parent.parent, path.name, class_names=names, **kw)
        if (path / "annotations").is_dir():
            ann = _coco_root_json(path, split)
            return CocoDataset(ann, Path(images) if images else _guess_images_dir(ann, split), **kw)
        if (path / "labelTxt").is_dir() and (path / "images").is_dir() and not (path / "images" / split).is_dir():
            # the DOTA devkit's flat layout (images/ + labelTxt/, no split folders): the same images for every split
            return DotaDataset(path, "", class_names=names, **kw)
        if any(path.glob("labelTxt*")):
            raise UserError(f"{path} looks like a DOTA root but has no labelTxt*/{split} folder")
        raise UserError(f"{path} is neither a DOTA root (labelTxt*/) nor a COCO root (annotations/instances_*.json)")
    if not path.exists():
        raise UserError(f"data not found: {path}")
    raise UserError(f"unsupported data file {path}: expected a COCO .json, a dataset .yaml or a folder")


def _from_yaml(path: Path, split: str, images, num_classes, imgsz, **kw: Any) -> DetectionDataset:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping with train:/val:/names:")
    names = cfg.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    elif names is not None and not isinstance(names, list):
        raise UserError(f"{path}: names must be a list or a mapping id -> name")
    entry = cfg.get(split)
    if entry is None:
        raise UserError(f"{path} has no '{split}:' entry")
    root = path.parent / cfg["path"] if cfg.get("path") else path.parent
    if isinstance(entry, dict):
        if "ann_file" not in entry:
            raise UserError(f"{path}: {split}: mapping needs ann_file (and images)")
        ann = root / entry["ann_file"]
        img_dir = root / entry["images"] if entry.get("images") else _guess_images_dir(ann, split)
        ds = CocoDataset(ann, img_dir, **kw)
    elif isinstance(entry, str):
        if entry.split(":", 1)[0] in SYNTHETIC_KINDS:
            ds = build_dataset(entry, split=split, num_classes=num_classes or (len(names) if names else None), imgsz=imgsz, **kw)
        else:
            ds = _from_path(root / entry, split, images, names, **kw)
    else:
        raise UserError(f"{path}: {split}: expected a path or a mapping, got {entry!r}")
    if names is not None and list(names) != list(ds.class_names):
        if isinstance(ds, CocoDataset) and len(names) == len(ds.class_names):
            ds.class_names = list(names)  # same count: the YAML spells them
        elif not isinstance(ds, (DotaDataset, SyntheticDataset)):
            raise UserError(f"{path}: names has {len(names)} classes but the data has {len(ds.class_names)}")
    return ds


def build_dataset(
    spec: str | Path,
    images: str | Path | None = None,
    split: str = "train",
    num_classes: int | None = None,
    imgsz: int = 640,
    seed: int = 0,
    transforms=None,
) -> DetectionDataset:
    """--data SPEC (see module docstring) -> dataset for `split`. Raises UserError for anything unusable.

    num_classes sets the synthetic class count and is checked against the classes of real data.
    """
    spec_str = str(spec)
    kw: dict[str, Any] = {"transforms": transforms}
    kind = spec_str.split(":", 1)[0]
    if kind in SYNTHETIC_KINDS:
        count = SYNTHETIC_DEFAULT_IMAGES.get(split, 200)
        if ":" in spec_str:
            try:
                count = int(spec_str.split(":", 1)[1])
            except ValueError:
                raise UserError(f"--data {spec_str}: expected {kind}:N with N an integer") from None
            if count < 1:
                raise UserError(f"--data {spec_str}: N must be >= 1")
        if kind == "easy":
            return SyntheticDataset(count, num_classes or 3, imgsz, seed=seed, split=split, max_objects=4, style="easy", **kw)
        if kind == "study":
            return SyntheticDataset(count, num_classes or 4, imgsz, seed=seed, split=split, max_objects=8, style="study", **kw)
        return SyntheticDataset(count, num_classes or 8, imgsz, seed=seed, split=split, **kw)
    path = Path(spec_str).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"dataset YAML not found: {path}")
        ds = _from_yaml(path, split, images, num_classes, imgsz, **kw)
    else:
        ds = _from_path(path, split, images, None, **kw)
    if num_classes is not None and num_classes != len(ds.class_names):
        raise UserError(f"--data {spec_str} has {len(ds.class_names)} classes but num_classes={num_classes} was asked")
    skips = getattr(ds, "skips", None)
    if skips is not None and skips.total():
        warnings.warn(f"{spec_str} ({split}): {len(ds)} images used; skipped or dropped: {skips.summary()}")
    return ds
