"""Confidence intervals for mAP differences: a paired bootstrap over images on COCOeval's own matching.

Whether an INT8 model "loses 0.8 mAP" means anything depends on how much mAP moves when the test images change. The
paired bootstrap answers it: draw the images with replacement, score both models on the same draw, and read the
2.5th and 97.5th percentiles of the difference. Re-running COCOeval per draw would take minutes, so the matching is
taken once from COCOeval (`evalImgs`: which detection hit which ground truth at each IoU threshold, what is ignored)
and only the accumulation step is redone, with each image weighted by how often the draw picked it. With every
weight 1 this reproduces COCOeval's AP exactly (tested); a weight of k counts the image's detections and ground truth
k times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REC_THRS = np.linspace(0.0, 1.00, 101)  # COCOeval's 101 recall points


@dataclass
class MatchTable:
    """Per category: every detection's score, image index, hit flag and ignore flag per IoU threshold, and the number
    of non-ignored ground truths per image. Area range "all", the largest maxDets of the evaluation."""

    image_ids: list[int]
    scores: list[np.ndarray]  # per category [D]
    image_index: list[np.ndarray]  # per category [D], index into image_ids
    hits: list[np.ndarray]  # per category [T, D] bool: matched a ground truth (that is not ignored)
    counted: list[np.ndarray]  # per category [T, D] bool: not ignored (hit or false positive)
    positives: list[np.ndarray]  # per category [num_images] non-ignored ground truths

    @property
    def num_images(self) -> int:
        return len(self.image_ids)


def match_table(coco_eval) -> MatchTable:
    """The matching of an evaluated (evaluate() called) pycocotools COCOeval, area range "all"."""
    p = coco_eval.params
    max_det = p.maxDets[-1]
    image_ids = list(p.imgIds)
    index_of = {img: i for i, img in enumerate(image_ids)}
    num_areas, num_images = len(p.areaRng), len(image_ids)
    scores, image_index, hits, counted, positives = [], [], [], [], []
    for k in range(len(p.catIds)):
        entries = [coco_eval.evalImgs[k * num_areas * num_images + i] for i in range(num_images)]  # area 0 = all
        s, ii, h, c = [], [], [], []
        pos = np.zeros(num_images, np.int64)
        for e in entries:
            if e is None:
                continue
            i = index_of[e["image_id"]]
            ds = np.asarray(e["dtScores"][:max_det], np.float64)
            dtm = np.asarray(e["dtMatches"], np.float64)[:, :max_det].reshape(len(p.iouThrs), -1)
            dti = np.asarray(e["dtIgnore"], bool)[:, :max_det].reshape(len(p.iouThrs), -1)
            pos[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            s.append(ds)
            ii.append(np.full(len(ds), i, np.int64))
            h.append((dtm > 0) & ~dti)
            c.append(~dti)
        T = len(p.iouThrs)
        scores.append(np.concatenate(s) if s else np.zeros(0))
        image_index.append(np.concatenate(ii) if ii else np.zeros(0, np.int64))
        hits.append(np.concatenate(h, 1) if h else np.zeros((T, 0), bool))
        counted.append(np.concatenate(c, 1) if c else np.zeros((T, 0), bool))
        positives.append(pos)
    # COCOeval sorts the concatenation by score with a stable sort: keep that order once, reuse it for every draw
    for k in range(len(scores)):
        order = np.argsort(-scores[k], kind="mergesort")
        scores[k], image_index[k] = scores[k][order], image_index[k][order]
        hits[k], counted[k] = hits[k][:, order], counted[k][:, order]
    return MatchTable(image_ids, scores, image_index, hits, counted, positives)


def weighted_ap(table: MatchTable, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(mAP over IoU 0.5:0.95, AP per category [K] with NaN where a category has no ground truth) with each image
    counted `weights[i]` times (all ones: COCOeval's AP)."""
    w = np.ones(table.num_images) if weights is None else np.asarray(weights, np.float64)
    per_class = np.full(len(table.scores), np.nan)
    all_q = []
    for k in range(len(table.scores)):
        npos = float(w @ table.positives[k])
        if npos == 0:
            continue
        wd = w[table.image_index[k]]  # [D]
        tp = np.cumsum(table.hits[k] * wd, axis=1)  # [T, D]
        fp = np.cumsum((table.counted[k] & ~table.hits[k]) * wd, axis=1)
        T = tp.shape[0]
        q = np.zeros((T, len(REC_THRS)))
        if tp.shape[1]:
            rc = tp / npos
            pr = tp / np.maximum(tp + fp, np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope, as COCOeval
            for t in range(T):
                idx = np.searchsorted(rc[t], REC_THRS, side="left")
                ok = idx < len(rc[t])
                q[t, ok] = pr[t, idx[ok]]
        per_class[k] = q.mean()
        all_q.append(q)
    if not all_q:
        return float("nan"), per_class
    return float(np.mean(np.stack(all_q))), per_class


@dataclass(frozen=True)
class Interval:
    """A difference (a - b) with its bootstrap percentile interval; mAP units as given (0..1)."""

    value: float
    low: float
    high: float
    level: float
    draws: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level, "draws": self.draws}


def paired_bootstrap(
    a: MatchTable, b: MatchTable, draws: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """mAP(a) - mAP(b) and its `level` interval from `draws` paired resamples of the images (same draw for both)."""
    if a.image_ids != b.image_ids:
        raise ValueError("paired bootstrap needs both evaluations on the same images in the same order")
    rng = np.random.default_rng(seed)
    n = a.num_images
    diffs = np.empty(draws)
    for d in range(draws):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        diffs[d] = weighted_ap(a, w)[0] - weighted_ap(b, w)[0]
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]) if len(diffs) else (np.nan, np.nan)
    return Interval(weighted_ap(a)[0] - weighted_ap(b)[0], float(lo), float(hi), level, int(len(diffs)))
