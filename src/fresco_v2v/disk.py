"""Writing the run's files safely: through a temporary name (``PARTIAL``), synced to disk before the rename, and
one clear message when the disk is full or read-only (:func:`write_failure`)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import WriteError

#: What a failed write of ours reports as the reason, by errno (anything else: the system's own words).
_WRITE_REASONS = {
    getattr(errno, name): reason
    for name, reason in [
        ("ENOSPC", "the disk is full"),
        ("EDQUOT", "the disk quota is used up"),
        ("EROFS", "the file system is read-only"),
        ("EACCES", "there is no permission to write there"),
        ("EPERM", "there is no permission to write there"),
        ("EFBIG", "the file is larger than this system allows"),
        ("EIO", "the disk reported an input/output error"),
    ]
    if hasattr(errno, name)  # EDQUOT is not defined everywhere
}
PARTIAL = ".partial-"  # in the names of files being written: what a killed run leaves, removed at the next start


def temp_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (same folder: the rename is atomic)."""
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def _free_space(path: Path) -> str:
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e9:.2f} GB free there" if free >= 1e9 else f"{free / 1e6:.1f} MB free there"


def write_failure(path: Path, e: OSError) -> OSError | WriteError:
    """The error to raise for ``e`` when writing ``path``: a :class:`WriteError` naming the file, the reason, the
    free space and what to do, for the errors of a full or read-only disk; ``e`` itself for any other."""
    reason = _WRITE_REASONS.get(e.errno) if isinstance(e.errno, int) else None
    if reason is None:
        return e
    return WriteError(
        f"{path}: could not be written: {reason} ({_free_space(path)}). Free some space or choose another "
        "--output, then rerun the same command: the finished keyframe batches and video chunks are kept."
    )


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file that is synced to disk before it is renamed, so the file is
    whole or absent even after a power loss; a write that fails removes the temporary and raises
    :func:`write_failure`'s error."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        remove_quietly(tmp)
        raise write_failure(path, e) from None


def remove_quietly(path: Path) -> None:
    """Remove a temporary if it is there; on a disk that went read-only it stays (the next start removes it)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
