"""torch.utils.cpp_extension builds guarded by a lock file that a killed run leaves behind.

torch guards each build folder with an empty `lock` file that only the Python process removes. A run killed mid-build
(Ctrl-C, OOM, a timeout) leaves that file behind, and every later run waits on it forever. Here a stale lock is
detected and removed before torch looks at it:

- our runs record their PID beside the lock (`lock.owner`); a lock whose recorded owner is dead is stale,
- a compiler still running in the build folder (an orphaned ninja) is waited for, not raced,
- a lock with no recorded owner and no compiler running in the folder is stale once older than `grace_s` (the
  moment between torch creating the lock and starting ninja, or loading the built library, is seconds long).

Used for NNCF's extension (quant/extension_lock.py) and for our own kernels (rtmdet_edge/models/bn_silu.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from rtmdet_edge.errors import UserError

DEFAULT_GRACE_S = 60.0


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
    build_dir: Path,
    grace_s: float = DEFAULT_GRACE_S,
    wait_s: float = 0.0,
    poll_s: float = 2.0,
    what: str = "a torch extension",
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
                f"another process is building {what} in {build_dir} (lock file present); wait for it "
                f"or, if nothing is building, delete {build_dir / 'lock'}"
            )
        time.sleep(poll_s)


@contextlib.contextmanager
def owned_build(build_dir: Path, wait_s: float, grace_s: float = DEFAULT_GRACE_S, what: str = "a torch extension"):
    """Clear a stale lock in build_dir, then record this process as the owner of the build torch is about to lock.

    Yields what happened to a previous lock ("free" or "removed"). The owner record goes once torch released the lock.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    state = clear_stale_lock(build_dir, grace_s, wait_s=wait_s, what=what)
    owner = build_dir / "lock.owner"
    owner.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
    try:
        yield state
    finally:
        if not (build_dir / "lock").exists():
            owner.unlink(missing_ok=True)
