"""One run per output folder: a lock file naming the run that holds it (pid, host, start time, a token).

Taken before a run writes anything but the folders; a second run into a held folder stops at once with a message
naming the holder. A lock left by a process that is no longer running on this host is taken over (logged). A lock
from another host cannot be checked, so it holds until removed (the message says how).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

logger = logging.getLogger(__name__)

LOCK_FILE = "lock"
#: A lock file with no readable content younger than this may be one being written (the non-link fallback): held.
_UNREADABLE_GRACE_S = 10.0


#: Tokens of the locks this process holds now: a lock file with this process's pid and another token is a leftover
#: of an earlier run of this process (the web UI serves many), not a live one.
_HELD: set[str] = set()


class FolderBusy(InputError):
    """Another live run holds the output folder."""


@dataclass
class FolderLock:
    path: Path
    token: str

    def release(self) -> None:
        """Remove the lock if it is still this run's (a lock taken over by another run is left alone)."""
        _HELD.discard(self.token)
        holder = _read(self.path)
        if holder is not None and holder.get("token") == self.token:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as e:  # a disk gone read-only: the next run on this host takes the stale lock over
                logger.warning("%s: could not remove this run's lock (%s)", self.path, e.strerror or e)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a process of another user counts as running)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _create(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` only if it does not exist, so that no reader sees it half-written
    (written aside, then hard-linked into place; where links are not supported, created exclusively)."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    aside.write_text(content)
    try:
        os.link(aside, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links (FAT, some network shares)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        aside.unlink(missing_ok=True)


def _pid(holder: dict) -> int:
    try:
        return int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return -1


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    return f"process {holder.get('pid')} on {holder.get('host')}, started {when}"


def lock_folder(state: Path) -> FolderLock:
    """Take ``state``/lock for this run, or raise :class:`FolderBusy` naming the run that holds it."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / LOCK_FILE
    host = socket.gethostname()
    token = uuid.uuid4().hex
    content = json.dumps({"pid": os.getpid(), "host": host, "started": time.time(), "token": token})
    for _ in range(3):  # another run may take over a stale lock between our read and our retry
        if _create(path, content):
            _HELD.add(token)
            return FolderLock(path, token)
        holder = _read(path)
        folder = state.parent
        if holder is None:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < _UNREADABLE_GRACE_S:
                raise FolderBusy(f"{folder}: another run is starting in this folder (its lock {path} is being written)")
            logger.warning("%s: the lock file is unreadable (a run killed while taking it); taking it over", path)
        elif holder.get("host") != host:
            raise FolderBusy(
                f"{folder}: another run uses this output folder ({_describe(holder)}); choose another --output, or "
                f"if that run has ended, delete {path}"
            )
        elif holder.get("token") in _HELD or (holder.get("pid") != os.getpid() and _process_alive(_pid(holder))):
            raise FolderBusy(
                f"{folder}: another run uses this output folder ({_describe(holder)}); wait for it to finish or "
                "choose another --output"
            )
        else:
            logger.warning("%s: taking over the lock of a run that is no longer running (%s)", path, _describe(holder))
        if _read(path) != holder:  # changed since we judged it: another run took it over first
            continue
        path.unlink(missing_ok=True)
    raise FolderBusy(f"{state.parent}: other runs keep taking this output folder's lock ({path})")
