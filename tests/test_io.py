"""rtmdet_edge.io: atomic writes leave either the old file or the whole new one (never a part), and content keys."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from rtmdet_edge import save_checkpoint
from rtmdet_edge.checkpoint import read_checkpoint
from rtmdet_edge.io import atomic_open, atomic_path, atomic_write_json, atomic_write_text, content_key, file_sha256


class _DiskFull:
    """Pickles as an error raised halfway through a write, as a full disk (ENOSPC) would."""

    def __reduce__(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def _leftovers(folder) -> list[str]:
    return [p for p in os.listdir(folder) if ".tmp-" in p]


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, "old")
    atomic_write_json(path, {"AP": 0.5, "APs": float("nan")})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"AP":0.5,"APs":null}'
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044 == 0o044 or os.name == "nt"  # not mkstemp's 0600
    assert _leftovers(path.parent) == []


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"good")
    with pytest.raises(OSError, match="No space"):
        with atomic_open(path, "wb") as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"good" and _leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.onnx") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert not (tmp_path / "new.onnx").exists() and _leftovers(tmp_path) == []


def test_temp_path_keeps_the_suffix_for_writers_that_choose_the_format_by_it(tmp_path) -> None:
    with atomic_path(tmp_path / "clip.mp4") as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "clip.mp4").read_bytes() == b"x"


def test_checkpoint_save_on_full_disk_keeps_the_last_good_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "next_epoch": 1})
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "boom": _DiskFull()})
    ckpt = read_checkpoint(path)
    assert ckpt["next_epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert _leftovers(tmp_path) == []


def test_content_key_follows_bytes_and_settings_not_names(tmp_path) -> None:
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-1")
    c.write_bytes(b"weights-2")
    assert content_key([a], {"precision": "fp16"}) == content_key([b], {"precision": "fp16"})
    assert content_key([a], {"precision": "fp16"}) != content_key([c], {"precision": "fp16"})
    assert content_key([a], {"precision": "fp16"}) != content_key([a], {"precision": "fp32"})
    assert content_key([a], {"x": 1, "y": 2}) == content_key([a], {"y": 2, "x": 1})
    assert len(file_sha256(a)) == 64


def test_full_disk_inside_torch_save_surfaces_as_enospc_not_a_zip_error(tmp_path, monkeypatch) -> None:
    # torch.save's zip writer reports a failed write as RuntimeError("unexpected pos ..."); the user must see ENOSPC.
    import contextlib

    from rtmdet_edge import checkpoint

    class _SmallDisk:
        def __init__(self) -> None:
            self.size = 0

        def write(self, data) -> int:
            if self.size + len(data) > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.size += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(checkpoint, "atomic_open", lambda path, mode: contextlib.nullcontext(_SmallDisk()))
    with pytest.raises(OSError) as e:
        save_checkpoint(tmp_path / "x.pth", {"w": torch.ones(100_000)})
    assert e.value.errno == errno.ENOSPC


def test_stale_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path) -> None:
    from rtmdet_edge.io import remove_stale_temps, temp_path_beside

    stale = temp_path_beside(tmp_path / "last.pth")  # what a SIGKILL mid-write leaves
    keep = [tmp_path / "last.pth", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for p in keep:
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert all(p.exists() for p in keep) and not stale.exists()
