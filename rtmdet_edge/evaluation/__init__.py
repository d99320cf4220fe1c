"""Evaluation: COCO mAP (pycocotools) and `eval` (DOTA mAP goes beside it)."""
