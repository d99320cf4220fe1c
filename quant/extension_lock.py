"""NNCF's PyTorch backend compiles a C++ extension on first use (about a minute, more on a loaded machine).

A run killed mid-build leaves torch's build lock behind and every later run waits on it (NNCF then gives up after
NNCF_EXTENSION_LOAD_TIMEOUT with a hint to `rm -rf` the folder); rtmdet_edge/extension_lock.py detects and removes
such a stale lock before NNCF loads the extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtmdet_edge.errors import UserError
from rtmdet_edge.extension_lock import DEFAULT_GRACE_S, owned_build

EXTENSION_NAME = "quantized_functions_cpu"
DEFAULT_LOAD_TIMEOUT_S = 600  # NNCF's own default (60 s) is shorter than one build on 2 busy cores


def extension_build_dir(name: str = EXTENSION_NAME) -> Path:
    """The folder NNCF builds `name` in (same formula as nncf.torch.extensions.get_build_directory_for_extension)."""
    import torch
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory("nncf/" + name, verbose=False)) / torch.__version__


def load_nncf_torch_extension(timeout_s: float = DEFAULT_LOAD_TIMEOUT_S, grace_s: float = DEFAULT_GRACE_S) -> str:
    """Build/load NNCF's CPU quantization extension now, with stale-lock recovery and one clear error on timeout.

    Returns what happened to a previous lock ("free" or "removed").
    """
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(int(timeout_s)))
    build_dir = extension_build_dir()
    with owned_build(build_dir, wait_s=timeout_s, grace_s=grace_s, what="NNCF's torch extension") as state:
        from nncf.torch.extensions import ExtensionLoaderTimeoutException
        from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

        try:
            QuantizedFunctionsCPU.get("Quantize_forward")
        except ExtensionLoaderTimeoutException:
            raise UserError(
                f"NNCF's torch extension did not build within {int(timeout_s)} s in {build_dir}; rerun (a stale lock "
                "is cleared automatically) or raise NNCF_EXTENSION_LOAD_TIMEOUT"
            ) from None
    return state
