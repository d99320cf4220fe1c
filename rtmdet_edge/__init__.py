"""rtmdet-edge: RTMDet that trains, reproduces the official checkpoints, and ships in INT8 to edge runtimes."""

from rtmdet_edge.checkpoint import load_checkpoint, save_checkpoint
from rtmdet_edge.config import PRESETS, ModelConfig, get_config
from rtmdet_edge.errors import UserError
from rtmdet_edge.models.model import RTMDet, build_model

__all__ = [
    "PRESETS",
    "Detector",
    "ModelConfig",
    "RTMDet",
    "UserError",
    "build_criterion",
    "build_model",
    "get_config",
    "load_checkpoint",
    "save_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: these pull in OpenCV / the loss code, which `import rtmdet_edge` alone should not pay for.
    if name == "Detector":
        from rtmdet_edge.inference.detector import Detector

        return Detector
    if name == "build_criterion":
        from rtmdet_edge.training.loss import build_criterion

        return build_criterion
    raise AttributeError(f"module 'rtmdet_edge' has no attribute {name!r}")
