"""One file per quantization recipe, each a `Recipe`: fp32 ONNX + calibration batch -> Q/DQ ONNX (+ OpenVINO IR).

Chosen by name from a small dict (STYLE.md rule 9); a recipe's runtime import stays inside its file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from quant.settings import RECIPES, QuantSettings
from rtmdet_edge.errors import UserError


@dataclass
class RecipeOutput:
    """What a recipe wrote. qdq_onnx always exists; openvino_xml only for recipes that make an IR (nncf)."""

    qdq_onnx: Path
    openvino_xml: Path | None = None
    notes: list[str] = field(default_factory=list)  # choices the recipe made (mapped calibrator, excluded ops, ...)
    float_reasons: dict[str, str] = field(default_factory=dict)  # node the recipe kept float -> why


class Recipe(Protocol):
    name: str

    def quantize(
        self, fp32_onnx: Path, calib_batch: np.ndarray, settings: QuantSettings, out_dir: Path
    ) -> RecipeOutput:
        """fp32_onnx: the fused deployment graph; calib_batch: [N,3,H,W] float32, the project's pre-processing."""
        ...


MODULES = {
    "nncf": "quant.recipes.nncf",
    "onnxruntime": "quant.recipes.onnxruntime",
    "tensorrt": "quant.recipes.tensorrt",
}


def get_recipe(name: str) -> Recipe:
    if name not in MODULES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return importlib.import_module(MODULES[name]).RECIPE
