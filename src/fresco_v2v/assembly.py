"""Stages 4 and 5 of a run: the frames between the keyframes propagated from them (§3.5), and the output assembled
from chunks with the input's exact rate and audio, then the run report.

`translate_video` streams every frame through one encoder pass (:func:`assemble`); a cluster (``fresco batch``)
cuts the same work into chunk tasks that start as soon as the keyframes they need exist (:func:`batches_needed`,
:func:`propagate_chunk`) and one assembly once all are made (:func:`assemble_chunks`). Both write the same chunk
files, so their outputs are equal byte for byte.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__
from .encode import chunk_files, chunk_starts, encode_chunk, encode_video, join_chunks
from .errors import Cancelled, InputError
from .flow import get_flow_estimator
from .models import model_note, resolve_device
from .run_files import KeyImages, keyframe_path, write_json
from .run_folder import stopped_message
from .run_plan import RunPlan
from .video import FrameReader, describe_rate


@dataclass
class RunResult:
    output_dir: Path
    video: Path | None
    keyframes: list[int]
    batches: list[list[int]]
    report: dict = field(default_factory=dict)
    #: Every output frame (uint8 RGB) as handed to the encoder, for callers that score them without decoding.
    frames: list[np.ndarray] = field(default_factory=list)


def colorize(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Paper §4.3 video colorization: the input's lightness L with the result's chroma AB (CIELAB)."""
    lab = cv2.cvtColor(result, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)[..., 0]
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def rate_text(report: dict) -> str:
    """The output's timing in a run report, for a summary line (``describe_rate``)."""
    return describe_rate(Fraction(report["fps"]), report.get("frame_timing", "constant rate") != "constant rate")


def package_versions() -> dict[str, str]:
    import av
    import diffusers
    import transformers

    return {
        "fresco-v2v": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def propagate_frames(
    plan: RunPlan,
    reader: FrameReader,
    stylized_keys: KeyImages,
    estimator,
    device,
    progress=True,
    should_stop=None,
    start: int = 0,
    end: int | None = None,
) -> Iterator[np.ndarray]:
    """Stage 4: frames ``start``.. in order (``start``: 0 or a key; ``end``: None, or a key to stop before), the
    others propagated from the keyframes segment by segment (§3.5) and colorized when asked (§4.3), as the encoder
    takes them: memory holds a few segments, not the video."""
    cfg, keys, n = plan.cfg, plan.keys, plan.info.num_frames
    end = n if end is None else end
    if cfg.propagation and len(keys) < n:
        from .propagate import iter_propagate

        frames = iter_propagate(
            reader,
            keys,
            stylized_keys,
            cfg.propagation_config(),
            device=device,
            estimator=estimator,
            progress=progress,
            should_stop=should_stop,
            start=start,
            end=end,
        )
    else:
        # without propagation every frame shows its nearest keyframe: a fast preview with the right frame count
        nearest = np.abs(np.arange(start, end)[:, None] - np.array(keys)[None]).argmin(1)
        frames = (stylized_keys[i] for i in nearest)
    try:
        for t, frame in enumerate(frames, start=start):
            yield colorize(frame, reader[t]) if cfg.colorize else frame
    except Cancelled as e:
        raise stopped_message(e, plan.out, len(plan.batches), len(plan.batches)) from None


def run_report(plan: RunPlan, audio_note: str, flow_report: dict) -> dict:
    """The run report (OUTDIR/run.json): input and output timing, keyframes, batches, seconds, versions, config."""
    info, cfg = plan.info, plan.cfg
    return {
        "input": str(cfg.input),
        "frames": info.num_frames,
        "fps": f"{info.fps.numerator}/{info.fps.denominator}",
        "frame_timing": "constant rate" if info.times is None else "variable rate: each frame keeps its timestamp",
        "size": list(info.size),
        "source_size": list(info.fit.source_size),
        "fit": info.fit.mode,
        "audio": audio_note,
        "keyframes": plan.keys,
        "batches": plan.batches,
        "seed": cfg.seed,
        "seconds": plan.seconds,
        "keyframe_flow": flow_report,
        "versions": package_versions(),
        "config": cfg.to_dict(),
        "note": model_note(cfg.model),
    }


def _finish(plan: RunPlan, audio_note: str, flow_report: dict, kept: list[np.ndarray]) -> RunResult:
    report = run_report(plan, audio_note, flow_report)
    write_json(plan.out / "run.json", report)
    return RunResult(plan.out, plan.out / "video.mp4", plan.keys, plan.batches, report, kept)


def assemble(
    plan: RunPlan,
    make_frames: Callable[[int], Iterator[np.ndarray]],
    flow_report: dict,
    keep: bool = False,
    progress: bool = True,
) -> RunResult:
    """Stage 5: the frames of ``make_frames(start)`` encoded chunk by chunk as they come (resuming at the first
    unfinished chunk), remuxed at the input's exact rate (or timestamps) with its audio, and the run report.
    ``keep``: also return the frames made in this call (short clips, benchmarks)."""
    t0 = time.perf_counter()
    kept: list[np.ndarray] = []

    def frames(start: int) -> Iterator[np.ndarray]:
        for f in make_frames(start):
            if keep:
                kept.append(f)
            yield f

    starts = chunk_starts(plan.info.num_frames, plan.keys)
    audio_note = encode_video(plan.out / "video.mp4", frames, plan.info, plan.state / "chunks", starts, progress)
    plan.seconds["propagate_and_encode"] = time.perf_counter() - t0
    return _finish(plan, audio_note, flow_report, kept)


def _stylized_keys(plan: RunPlan) -> KeyImages:
    return KeyImages([keyframe_path(plan.out, k) for k in plan.keys])


def finish_run(plan: RunPlan, progress: bool = False) -> RunResult:
    """Stages 4-5 in one task for a plan whose keyframe batches have all finished (the report's ``keyframe_flow``
    names the backend only: its counts stay with the workers that translated)."""
    cfg = plan.cfg
    device = resolve_device(cfg.device)
    estimator = get_flow_estimator(cfg.propagation_config().flow, device=device)
    translated = _stylized_keys(plan)
    with FrameReader(plan.info, cache=2 * cfg.s_max + 2) as reader:

        def make_frames(start: int) -> Iterator[np.ndarray]:
            return propagate_frames(plan, reader, translated, estimator, device, progress, None, start)

        return assemble(plan, make_frames, {"backend": cfg.flow}, False, progress)


# -- the same stages as tasks, chunk by chunk (a cluster's CPU tasks) -----------------------------------------------


def output_chunks(plan: RunPlan) -> list[int]:
    """The first frames of the output's chunks (what :func:`assemble` writes): 0, then keys a few seconds apart."""
    return chunk_starts(plan.info.num_frames, plan.keys)


def batches_needed(plan: RunPlan) -> list[int]:
    """For each output chunk, how many of the plan's keyframe batches must have finished before it can be made:
    up to the batch of the last key it reads (the key it ends at; every key for the last chunk)."""
    starts, n = output_chunks(plan), plan.info.num_frames
    first_batch: dict[int, int] = {}
    for b, batch in enumerate(plan.batches):
        for k in batch:
            first_batch.setdefault(k, b)
    ends = [*starts[1:], n]
    return [1 + max(first_batch[k] for k in plan.keys if k <= end or end == n) for end in ends]


def propagate_chunk(plan: RunPlan, c: int, progress: bool = False) -> bool:
    """Chunk ``c`` of the output propagated and encoded into the state folder (frames ``starts[c]`` up to the next
    chunk's start). False when an earlier task had made it (a retried task redoes nothing)."""
    starts = output_chunks(plan)
    chunks = plan.state / "chunks"
    if chunk_files(chunks, starts)[c].is_file():
        return False
    end = starts[c + 1] if c + 1 < len(starts) else None
    missing = [k for k in plan.keys if (end is None or k <= end) and not keyframe_path(plan.out, k).is_file()]
    if missing:
        raise InputError(f"{plan.out}: chunk {c} needs keyframes {missing[:5]}, which are not translated yet")
    cfg = plan.cfg
    device = resolve_device(cfg.device)
    estimator = get_flow_estimator(cfg.propagation_config().flow, device=device)
    with FrameReader(plan.info, cache=2 * cfg.s_max + 2) as reader:
        frames = propagate_frames(plan, reader, _stylized_keys(plan), estimator, device, progress, None, starts[c], end)
        encode_chunk(chunks, starts, c, iter(frames), plan.info)
    return True


def assemble_chunks(plan: RunPlan, progress: bool = False) -> RunResult:
    """Stage 5 once every chunk is made (:func:`propagate_chunk`): the chunks remuxed with the audio, the report."""
    audio_note = join_chunks(plan.out / "video.mp4", plan.info, plan.state / "chunks", output_chunks(plan), progress)
    return _finish(plan, audio_note, {"backend": plan.cfg.flow}, [])
