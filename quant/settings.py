"""What a PTQ run is asked to do: one frozen dataclass shared by every recipe, the CLI and the summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rtmdet_edge.errors import UserError

RECIPES = ("nncf", "onnxruntime", "tensorrt")
CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
GRANULARITIES = ("per-channel", "per-tensor")
# Fewer images than this cannot estimate activation ranges of a detector (NNCF warns below 300, TensorRT asks 500);
# the floor only catches obvious mistakes such as a folder with two pictures.
MIN_CALIB_IMAGES = 8


@dataclass(frozen=True)
class QuantSettings:
    """Settings of one post-training quantization.

    calibrator: how activation ranges are estimated (minmax, percentile, entropy, mse; what each recipe maps it
        to is in quant/recipes/*.py). granularity: of the weight scales (activations are always per-tensor).
    ignore: node-name regular expressions kept in float (matched against the fused model's ONNX node names).
    activation_type: "u8" or "s8" for the onnxruntime recipe (u8 is ~4x faster than s8 on x86 CPUs here, because
        ONNX Runtime's x86 int8 GEMMs are U8S8); the tensorrt recipe is always s8 (symmetric).
    preset: NNCF preset, "mixed" (symmetric weights, asymmetric activations) or "performance" (all symmetric).
    bias_correction: "fast" (NNCF's default), "full" (slower, data-driven) or "none".
    float_slow_convs: onnxruntime recipe only: keep float the convs whose INT8 kernel ONNX Runtime's x86 CPU provider
        runs slower than float (depth-wise convs; k x k convs with fewer than 16 output channels, e.g. the stem), so
        the INT8 model is as fast as it can be. False quantizes every conv (what the gap study measures).
    """

    calibrator: str = "minmax"
    granularity: str = "per-channel"
    ignore: tuple[str, ...] = ()
    activation_type: str = "u8"
    preset: str = "mixed"
    bias_correction: str = "fast"
    float_slow_convs: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise UserError(f"unknown calibrator {self.calibrator!r}; choose one of {', '.join(CALIBRATORS)}")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"unknown granularity {self.granularity!r}; choose per-channel or per-tensor")
        if self.activation_type not in ("u8", "s8"):
            raise UserError(f"activation type must be u8 or s8, got {self.activation_type!r}")
        if self.preset not in ("mixed", "performance"):
            raise UserError(f"NNCF preset must be mixed or performance, got {self.preset!r}")
        if self.bias_correction not in ("fast", "full", "none"):
            raise UserError(f"bias correction must be fast, full or none, got {self.bias_correction!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ignore"] = list(self.ignore)
        return d


# What each recipe can do (checked before any export or calibration, so a wrong combination fails in a second).
RECIPE_CALIBRATORS = {
    "nncf": ("minmax", "percentile", "mse"),  # NNCF has no KL-entropy estimator
    "onnxruntime": ("minmax", "percentile", "entropy"),  # ORT has no MSE search
    "tensorrt": ("minmax", "percentile", "entropy"),
}


def check_recipe_settings(recipe: str, settings: QuantSettings) -> None:
    """One clear UserError for a recipe/setting combination that cannot work."""
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if settings.calibrator not in RECIPE_CALIBRATORS[recipe]:
        others = [r for r, c in RECIPE_CALIBRATORS.items() if settings.calibrator in c]
        raise UserError(
            f"the {recipe} recipe has no {settings.calibrator} calibrator; choose one of "
            f"{', '.join(RECIPE_CALIBRATORS[recipe])}" + (f" (or --recipe {others[0]})" if others else "")
        )
    if recipe == "tensorrt" and settings.granularity != "per-channel":
        raise UserError(
            "--recipe tensorrt quantizes weights per output channel (TensorRT's rule for Conv; per-tensor weights "
            "lose depth-wise convs); drop --granularity per-tensor"
        )
