"""Files a user relies on: atomic writes (a kill or a full disk never leaves half a file) and content keys for caches.

Atomic write = a temporary file in the destination's folder (same filesystem, so the final rename is atomic),
flush + fsync, then os.replace. On any failure (full disk, Ctrl-C, an exception while serialising) the temporary
file is removed and an existing destination is left as it was.

Cached artefacts (TensorRT engines built from an ONNX, converted IRs) are keyed by `content_key`: a hash of the bytes
of their sources and of the settings that shaped them, never by file name, so re-exporting other weights under the
same name can never be served a stale engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_path_beside(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """A new empty temporary file in path's folder, named `.NAME.tmp-XXXX<suffix>` (suffix: path's own by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    return Path(tmp_name)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync `tmp` and move it onto `path` in one atomic rename."""
    tmp, path = Path(tmp), Path(path)
    _fsync_file(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result gets the permissions open() would give
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file name (onnx.save, cv2.VideoWriter, ...).

    The temporary name keeps the destination's suffix (some writers pick the format from it) unless `suffix` is given.
    When the block ends normally the file is fsynced and moved onto `path`; otherwise it is removed.
    """
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        commit_temp(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process (SIGKILL, power loss) left in `folder`."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """open() for writing whose result appears at `path` only once the block completes (mode "w" or "wb")."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON with NaN/inf written as null (strict JSON: other tools refuse the NaN literal)."""
    return atomic_write_text(path, json.dumps(finite_or_none(obj), indent=indent) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp_path), then move its file onto `path`: atomic_write_with(p, lambda t: onnx.save(m, str(t)))."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def finite_or_none(obj: Any) -> Any:
    """obj with every NaN/inf float (nested in dicts, lists, tuples) replaced by None; numpy scalars as Python ones."""
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy scalar / 0-d array
        obj = obj.item()
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened (Windows), which is fine.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_key(sources: list[str | os.PathLike] | tuple[str | os.PathLike, ...], settings: Mapping[str, Any]) -> str:
    """A short key for a cached artefact: hash of each source's bytes (not its name) and of the settings.

    Sources that hold external data (an .onnx with .data beside it, an .xml with its .bin) should all be listed.
    """
    h = hashlib.sha256()
    for src in sources:
        h.update(file_sha256(src).encode())
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
