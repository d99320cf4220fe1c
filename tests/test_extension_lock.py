"""Stale torch-extension lock recovery (rtmdet_edge/extension_lock.py) on a fake build folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from rtmdet_edge.extension_lock import clear_stale_lock, lock_state
from rtmdet_edge.errors import UserError


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def make_lock(folder, owner_pid=None, age_s=0.0):
    lock = folder / "lock"
    lock.write_text("")
    if owner_pid is not None:
        (folder / "lock.owner").write_text(json.dumps({"pid": owner_pid}))
    t = time.time() - age_s
    os.utime(lock, (t, t))


def test_no_lock_is_free(tmp_path):
    assert lock_state(tmp_path) == "free"
    assert clear_stale_lock(tmp_path) == "free"


def test_lock_of_a_killed_run_is_removed(tmp_path):
    make_lock(tmp_path, owner_pid=dead_pid())
    assert lock_state(tmp_path) == "stale"
    assert clear_stale_lock(tmp_path) == "removed"
    assert not (tmp_path / "lock").exists() and not (tmp_path / "lock.owner").exists()


def test_lock_of_a_live_owner_is_kept_and_waiting_ends_in_one_clear_line(tmp_path):
    make_lock(tmp_path, owner_pid=os.getpid())
    assert lock_state(tmp_path) == "building"
    with pytest.raises(UserError, match="another process is building") as e:
        clear_stale_lock(tmp_path, wait_s=0.2, poll_s=0.05)
    assert "\n" not in str(e.value)
    assert (tmp_path / "lock").exists()


def test_unowned_lock_is_stale_after_the_grace_period(tmp_path):
    """A lock left by a run that did not record its owner (NNCF used directly, then killed)."""
    make_lock(tmp_path, age_s=10)
    assert lock_state(tmp_path, grace_s=60) == "building"
    make_lock(tmp_path, age_s=120)
    assert lock_state(tmp_path, grace_s=60) == "stale"


def test_a_compiler_running_in_the_folder_is_waited_for(tmp_path):
    """An orphaned ninja (its Python parent killed) still builds in the folder: never race it, even if the owner died."""
    make_lock(tmp_path, owner_pid=dead_pid(), age_s=3600)
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path)
    try:
        time.sleep(0.2)
        assert lock_state(tmp_path) == "building"
    finally:
        builder.kill()
        builder.wait()
    assert lock_state(tmp_path) == "stale"


def test_lock_released_while_waiting(tmp_path):
    make_lock(tmp_path, owner_pid=os.getpid())
    (tmp_path / "lock").unlink()
    assert clear_stale_lock(tmp_path, wait_s=1.0, poll_s=0.05) == "free"
