"""RTMDet-Ins parity numbers for the README: official fixture (raw outputs, end-to-end masks, loss) and deployed
runtimes (ONNX Runtime, OpenVINO FP32) against PyTorch, as mean matched mask IoU.

    python benchmarks/ins_parity.py     # needs ../shared/fixtures/official/rtmdet-ins_tiny; writes benchmarks/results/ins_parity.{json,md}
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT.parent / "shared" / "fixtures" / "official" / "rtmdet-ins_tiny"


def main() -> int:
    from rtmdet_edge import build_criterion, load_checkpoint
    from rtmdet_edge.geometry.masks import matched_mask_iou, unpack_masks
    from rtmdet_edge.inference.postprocess_ins import INS_OFFICIAL, postprocess_ins
    from rtmdet_edge.inference.preprocess import normalize, preprocess
    from rtmdet_edge.models.outputs import flatten_outputs, group_outputs, output_names

    torch.set_num_threads(1)
    if not FOLDER.is_dir():
        print(f"{FOLDER} not found", file=sys.stderr)
        return 2
    res: dict = {}
    model = load_checkpoint(FOLDER / "checkpoint.pth").eval()
    res["params"] = sum(p.numel() for p in model.parameters())
    noise = json.loads((FOLDER / "config.json").read_text())["fp32_vs_fp64_maxabs"]["320x320"]
    raw = np.load(FOLDER / "raw_320x320.npz")
    with torch.no_grad():
        got = flatten_outputs(model(torch.from_numpy(raw["input"])))
    res["raw_320_max_err_over_noise"] = max(float(np.abs(v.numpy() - raw[k]).max()) / noise[k] for k, v in got.items())

    pred = np.load(FOLDER / "predict.npz")
    batch, metas = preprocess([pred["image_bgr"]], 640)
    x = normalize(torch.from_numpy(batch))
    with torch.no_grad():
        out = model(x)
    det = postprocess_ins(out, metas, INS_OFFICIAL)[0]
    ref_masks = unpack_masks(pred["pred_masks_packed"], tuple(int(s) for s in pred["pred_masks_shape"]))

    class Ref:  # the official prediction as a detection set
        boxes, labels, masks = pred["pred_bboxes"], pred["pred_labels"], ref_masks

    res["official_num_dets"] = int(len(pred["pred_scores"]))
    res["ours_num_dets"] = len(det)
    res["official_e2e_mean_matched_mask_iou"] = matched_mask_iou(Ref, det.numpy())
    res["official_e2e_min_matched_mask_iou"] = float(matched_mask_iou(Ref, det.numpy(), per_instance=True).min())

    loss_ref = np.load(FOLDER / "loss_seed0.npz")
    outputs = {g: [torch.from_numpy(loss_ref[f"{n}_{i}"]) for i in range(3)] for g, n in
               (("cls_scores", "cls_score"), ("bbox_preds", "bbox_pred"), ("kernel_preds", "kernel_pred"))}  # fmt: skip
    outputs["mask_feat"] = torch.from_numpy(loss_ref["mask_feat"])
    targets = [{"boxes": torch.from_numpy(loss_ref[f"gt_bboxes_{i}"]), "labels": torch.from_numpy(loss_ref[f"gt_labels_{i}"]),
                "masks": torch.from_numpy(loss_ref[f"gt_masks_{i}"])} for i in range(2)]  # fmt: skip
    losses = build_criterion(model)(outputs, targets)
    for k in ("loss_cls", "loss_bbox", "loss_mask"):
        res[f"{k}_rel_err"] = abs(losses[k].item() - float(np.sum(loss_ref[k]))) / abs(float(np.sum(loss_ref[k])))

    # Deployed: fused network exported with named outputs; masks assembled in post-processing.
    class Flat(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(flatten_outputs(self.m(t)).values())

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ins.onnx"
        torch.onnx.export(Flat(load_checkpoint(FOLDER / "checkpoint.pth").fuse()), (x,), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=output_names(out))  # fmt: skip
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        named = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
        d = postprocess_ins(group_outputs(named), metas, INS_OFFICIAL)[0]
        res["onnxruntime_fp32_mean_matched_mask_iou"] = matched_mask_iou(det.numpy(), d.numpy())
        try:
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            r = compiled(x.numpy())
            named = {o.get_any_name(): np.asarray(r[o]) for o in compiled.outputs}
            d = postprocess_ins(group_outputs(named), metas, INS_OFFICIAL)[0]
            res["openvino_fp32_mean_matched_mask_iou"] = matched_mask_iou(det.numpy(), d.numpy())
        except ImportError:
            res["openvino_fp32_mean_matched_mask_iou"] = None

    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ins_parity.json").write_text(json.dumps(res, indent=1))
    lines = [
        "RTMDet-Ins parity (official fixture `rtmdet-ins_tiny`, random weights in the official layout; grace_hopper "
        "600x512 at 640 for the end-to-end and deployed rows). Written by `python benchmarks/ins_parity.py`.",
        "",
        "| check | value |",
        "|---|---:|",
    ] + [f"| {k} | {v if isinstance(v, int) else ('-' if v is None else f'{v:.6g}')} |" for k, v in res.items()]
    (out_dir / "ins_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
