"""The output folder of a run: its resume state under OUTDIR/.fresco/, what a resumed run must share with the one
that started, its lock (one run at a time), what a Stop says, and the disk a run needs (checked before any
work)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .config import RunConfig
from .disk import PARTIAL
from .errors import Cancelled, ConfigError, InputError
from .folder_lock import LOCK_FILE, FolderLock, lock_folder
from .run_files import write_json
from .video import VideoInfo

logger = logging.getLogger(__name__)
STATE_DIR = ".fresco"
RUN_CONFIG = "run-config.json"  # in STATE_DIR: the whole RunConfig, a --config file to go on with a stopped run


#: Fields that do not change the translated keyframes: changing them may resume a run.
_RESUME_FREE = ("output", "propagation", "propagation_options", "colorize", "device", "dtype")


def resume_signature(cfg: RunConfig) -> dict:
    """What a resumed run must share with the run that started: every field that shapes the keyframes, the input
    file's identity (size, modification time) and the dtype "auto" resolved to on this machine."""
    from .models import resolve_device, resolve_dtype

    sig = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    st = Path(cfg.input).stat()
    sig["input_file"] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    sig["resolved_dtype"] = str(resolve_dtype(cfg.dtype, resolve_device(cfg.device)))
    return sig


def prepare_output(out: Path, cfg: RunConfig, overwrite: bool) -> tuple[Path, FolderLock]:
    """Create OUTDIR (checked writable) and its state folder, and take its lock (a second run into the folder stops
    here, before anything is written or deleted); refuse to mix runs of different configs. Returns the state
    folder and the lock, which the caller releases when the run ends."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{out}: the output folder is not writable ({e.strerror or e})") from None
    state = out / STATE_DIR
    lock = lock_folder(state)
    try:
        remove_partial_files(out)
        _check_or_clear(out, state, cfg, overwrite)
    except BaseException:
        lock.release()
        raise
    return state, lock


def remove_partial_files(out: Path) -> None:
    """The temporaries that killed runs left in OUTDIR (this run holds its lock, so no other run is writing them)."""
    folders = [out, out / "keyframes", out / STATE_DIR, out / STATE_DIR / "chunks"]
    stale = [p for f in folders if f.is_dir() for p in f.iterdir() if PARTIAL in p.name or p.name.startswith(".write-")]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        logger.info("%s: removed %d unfinished files of an earlier run that was killed", out, len(stale))


def _check_or_clear(out: Path, state: Path, cfg: RunConfig, overwrite: bool) -> None:
    saved = state / "config.json"
    mine = json.loads(json.dumps(resume_signature(cfg), default=str))  # compared as stored: after a JSON round trip
    if overwrite:  # everything of the earlier run but the lock this run now holds
        for p in state.iterdir():
            if p.name != LOCK_FILE:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        shutil.rmtree(out / "keyframes", ignore_errors=True)
        for p in (out / "video.mp4", out / "run.json"):
            p.unlink(missing_ok=True)
    elif saved.is_file() and any(state.glob("batch_*.pt")):  # only a run with finished work is protected
        try:
            theirs = json.loads(saved.read_text())
            if not isinstance(theirs, dict):
                raise ValueError("not a mapping")
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(
                f"{saved}: damaged ({e}), so it cannot tell which configuration made the finished keyframe batches "
                f"in {out}; pass --overwrite to start over, or choose another --output"
            ) from None
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            raise ConfigError(
                "output",
                f"a folder without a run of another configuration (changed: {', '.join(changed)}); pass --overwrite "
                "to start over, or choose another --output",
                str(out),
            )
    (out / "keyframes").mkdir(exist_ok=True)
    write_json(saved, mine)


def stopped_message(e: Cancelled, out: Path, finished: int, total: int) -> Cancelled:
    """A Stop's message: what was kept and how to go on (a rerun resumes after the finished batches)."""
    if not finished:
        return Cancelled(f"{e}; no keyframe batch of {total} had finished, so there is nothing to go on from")
    return Cancelled(f"{e}; {resume_hint(out, finished, total)}")


def finished_hint(state: Path, out: Path, total: int) -> str:
    """`` `` + ``resume_hint`` when some batch has finished, else nothing."""
    finished = len(list(state.glob("batch_*.pt")))
    return f" {resume_hint(out, finished, total)} (on this device, with these settings)." if finished else ""


def resume_hint(out: Path, finished: int, total: int | None = None) -> str:
    """Where the finished batches are and the command that goes on from them (it works whatever flags the run was
    started with, --overwrite included: the whole config is in the file)."""
    count = f"{finished} of {total}" if total is not None else f"{finished}"
    return (
        f"{count} keyframe batches are finished and kept in {out} (keyframes/, {STATE_DIR}/). To go on from them: "
        f"fresco translate --config {out / STATE_DIR / RUN_CONFIG}"
    )


def disk_needed(info: VideoInfo, num_keys: int, num_batches: int, steps: int) -> int:
    """Bytes a run writes at most, as an upper estimate: the video twice (its chunks, then the remuxed file) at a
    tenth of raw yuv420p, one PNG per keyframe at raw RGB size, and each batch's anchor latents (float32)."""
    w, h = info.size
    video = info.num_frames * w * h * 3 // 2 // 10
    anchors = num_batches * 2 * (steps + 1) * 4 * (h // 8) * (w // 8) * 4
    return 2 * video + num_keys * w * h * 3 + anchors


def check_disk_space(folder: Path, needed: int) -> None:
    """InputError naming needed and available space when ``folder``'s file system has less than ``needed`` free."""
    free = shutil.disk_usage(folder).free

    def size(n: int) -> str:
        return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"

    if free < needed:
        raise InputError(
            f"{folder}: the run needs about {size(needed)} of disk (video chunks, the video, keyframes, resume "
            f"state) and {size(free)} are free; free some space or choose another --output"
        )
