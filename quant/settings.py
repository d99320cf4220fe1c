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


# Options that act only with some recipes or one method. The CLI passes the options the user typed (not those left
# at their defaults), so a combination that would silently do nothing ends in one error line instead.
RECIPE_ONLY_OPTIONS = {
    "--activation-type": (
        ("onnxruntime",),
        "it sets the onnxruntime recipe's activations; tensorrt is always S8, nncf follows --preset",
    ),
    "--int8-everywhere": (
        ("onnxruntime",),
        "only the onnxruntime recipe keeps convs float for speed; the others quantize every conv already",
    ),
    "--preset": (("nncf",), "it is an NNCF preset; onnxruntime is asymmetric U8 activations, tensorrt symmetric S8"),
    "--bias-correction": (
        ("nncf",),
        "it is NNCF's; ONNX Runtime's quantizer, behind onnxruntime and tensorrt, has none",
    ),
}
QAT_ONLY_OPTIONS = ("--epochs", "--lr", "--batch", "--resume")
PTQ_ONLY_OPTIONS = {
    "--activation-type": "QAT's activations follow the recipe (onnxruntime U8 asymmetric, tensorrt S8, nncf --preset)",
    "--int8-everywhere": "QAT quantizes every conv NNCF places a quantizer on",
    "--ignore": "its patterns match ONNX node names, which NNCF's PyTorch model does not have",
    "--max-drop": "the mixed-precision search ranks PTQ models",
    "--calibrator": "QAT starts from NNCF's default ranges and then learns them (quant.qat.QAT_RANGE_INIT)",
}
# Recipes whose scheme NNCF's PyTorch QAT can reproduce (quant.qat.QAT_SCHEMES). Not tensorrt: with preset
# performance NNCF 3.4 still writes uint8 and per-channel activation quantizers and leaves the channel-attention convs
# float (28 TensorRT rule violations on rtmdet-tiny), and forcing signed activations conflicts with its CPU/ANY
# hardware configs.
QAT_RECIPES = ("onnxruntime", "nncf")


def check_explicit_options(method: str, recipe: str, explicit: set[str]) -> None:
    """One UserError for an option the user typed that has no effect with this method and recipe."""
    if method == "ptq":
        for option in QAT_ONLY_OPTIONS:
            if option in explicit:
                raise UserError(f"{option} is a QAT option; add --method qat or drop {option}")
    else:
        if recipe not in QAT_RECIPES:
            raise UserError(
                f"--method qat cannot follow the {recipe} recipe's rules (NNCF's PyTorch QAT writes uint8 and "
                f"per-channel activation quantizers); use --recipe {' or '.join(QAT_RECIPES)}, or --method ptq"
            )
        for option, why in PTQ_ONLY_OPTIONS.items():
            if option in explicit:
                raise UserError(f"--method qat does not take {option} ({why}); drop it")
    for option, (recipes, why) in RECIPE_ONLY_OPTIONS.items():
        if option in explicit and recipe not in recipes:
            raise UserError(f"--recipe {recipe} does not take {option} ({why}); drop it or use --recipe {recipes[0]}")
