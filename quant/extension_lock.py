"""NNCF's PyTorch backend compiles a C++ extension on first use (about a minute, more on a loaded machine).

torch.utils.cpp_extension guards the build with an empty `lock` file that only the Python process removes. A run
killed mid-build (Ctrl-C, OOM, a timeout) leaves that file behind, and every later run waits on it forever (NNCF
then gives up after NNCF_EXTENSION_LOAD_TIMEOUT with a hint to `rm -rf` the folder). Here a stale lock is detected
and removed before NNCF loads the extension:

- our runs record their PID beside the lock (`lock.owner`); a lock whose recorded owner is dead is stale,
- a compiler still running in the build folder (an orphaned ninja) is waited for, not raced,
- a lock with no recorded owner and no compiler running in the folder is stale once older than `grace_s` (the
  moment between torch creating the lock and starting ninja, or loading the built library, is seconds long).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rtmdet_edge.errors import UserError

EXTENSION_NAME = "quantized_functions_cpu"
DEFAULT_GRACE_S = 60.0
DEFAULT_LOAD_TIMEOUT_S = 600  # NNCF's own default (60 s) is shorter than one build on 2 busy cores


def extension_build_dir(name: str = EXTENSION_NAME) -> Path:
    """The folder NNCF builds `name` in (same formula as nncf.torch.extensions.get_build_directory_for_extension)."""
    import torch
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory("nncf/" + name, verbose=False)) / torch.__version__


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def builders_in(folder: Path) -> list[int]:
    """PIDs of processes whose working directory is `folder` (ninja and the compilers it starts run there)."""
    pids = []
    target = folder.resolve()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")).resolve() == target and int(proc.name) != os.getpid():
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def lock_state(build_dir: Path, grace_s: float = DEFAULT_GRACE_S, now: float | None = None) -> str:
    """ "free" (no lock), "building" (a compiler or a live owner holds it) or "stale" (safe to remove)."""
    lock = build_dir / "lock"
    if not lock.exists():
        return "free"
    if builders_in(build_dir):
        return "building"
    owner = build_dir / "lock.owner"
    if owner.exists():
        try:
            pid = int(json.loads(owner.read_text())["pid"])
        except (ValueError, KeyError, OSError):
            pid = -1
        if pid > 0:
            return "building" if pid_alive(pid) else "stale"
    age = (now or time.time()) - lock.stat().st_mtime
    return "stale" if age > grace_s else "building"


def clear_stale_lock(
    build_dir: Path, grace_s: float = DEFAULT_GRACE_S, wait_s: float = 0.0, poll_s: float = 2.0
) -> str:
    """Remove a stale lock (returns "removed"); wait up to wait_s while a build is running; UserError if it still is."""
    deadline = time.time() + wait_s
    while True:
        state = lock_state(build_dir, grace_s)
        if state == "free":
            return "free"
        if state == "stale":
            (build_dir / "lock").unlink(missing_ok=True)
            (build_dir / "lock.owner").unlink(missing_ok=True)
            return "removed"
        if time.time() >= deadline:
            raise UserError(
                f"another process is building NNCF's torch extension in {build_dir} (lock file present); wait for it "
                f"or, if nothing is building, delete {build_dir / 'lock'}"
            )
        time.sleep(poll_s)


def load_nncf_torch_extension(timeout_s: float = DEFAULT_LOAD_TIMEOUT_S, grace_s: float = DEFAULT_GRACE_S) -> str:
    """Build/load NNCF's CPU quantization extension now, with stale-lock recovery and one clear error on timeout.

    Returns what happened to a previous lock ("free" or "removed").
    """
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(int(timeout_s)))
    build_dir = extension_build_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    state = clear_stale_lock(build_dir, grace_s, wait_s=timeout_s)
    owner = build_dir / "lock.owner"
    owner.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
    try:
        from nncf.torch.extensions import ExtensionLoaderTimeoutException
        from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

        QuantizedFunctionsCPU.get("Quantize_forward")
    except ExtensionLoaderTimeoutException:
        raise UserError(
            f"NNCF's torch extension did not build within {int(timeout_s)} s in {build_dir}; rerun (a stale lock is "
            "cleared automatically) or raise NNCF_EXTENSION_LOAD_TIMEOUT"
        ) from None
    finally:
        if not (build_dir / "lock").exists():
            owner.unlink(missing_ok=True)
    return state
