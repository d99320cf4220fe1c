"""Datasets, transforms and train/test pipelines.

The sample contract (every dataset's load_raw(i) and __getitem__(i), every transform's input and output) is a dict:

    image         [H,W,3] uint8, BGR (as cv2 reads it)
    boxes         [N,4] float32, xyxy in pixels of `image`
    labels        [N] int64, 0-based contiguous (dataset.class_names[label])
    polygons      list of N lists of float32 [K,2] parts (x, y); an object may have no parts; the list may be empty
                  when the dataset has no segmentation. Used for masks (RTMDet-Ins).
    rboxes        [N,5] float32 (cx, cy, w, h, angle), le90: angle in radians in [-pi/2, pi/2). Optional: present
                  for DOTA and synthetic data.
    ignore_boxes  [M,4] float32 xyxy (COCO iscrowd regions): not training targets.
    image_id      int (the COCO image id for CocoDataset; the index otherwise)
    path          str or None
    ori_shape     (H, W) of the image as loaded
    difficult     [N] bool, DOTA only (optional)
    meta          LetterboxMeta, added by the test pipeline only

A dataset is a torch Dataset with __len__, __getitem__(i) (load_raw + self.transforms, drawing another index when
a transform rejects the sample), class_names: list[str] and load_raw(i) (no transforms). Transforms keep boxes,
polygons and rboxes aligned with the pixels. Build one from a --data spec with build_dataset.
"""

from rtmdet_edge.data.coco import CocoDataset
from rtmdet_edge.data.dota import DOTA_CLASSES, DotaDataset
from rtmdet_edge.data.pipeline import build_test_pipeline, build_train_pipeline
from rtmdet_edge.data.sample import DetectionDataset, Sample, empty_sample
from rtmdet_edge.data.spec import build_dataset
from rtmdet_edge.data.synthetic import SHAPES, SyntheticDataset, export_coco, export_dota
from rtmdet_edge.data.transforms import Compose, reseed

__all__ = [
    "DOTA_CLASSES",
    "SHAPES",
    "CocoDataset",
    "Compose",
    "DetectionDataset",
    "DotaDataset",
    "Sample",
    "SyntheticDataset",
    "build_dataset",
    "build_test_pipeline",
    "build_train_pipeline",
    "empty_sample",
    "export_coco",
    "export_dota",
    "reseed",
]
