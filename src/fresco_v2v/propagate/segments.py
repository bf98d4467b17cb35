"""The propagation driver: key segments, the flows to the keys, and :func:`propagate` over the whole video."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import Cancelled, ConfigError
from ..flow import FlowEstimator, compose_flows, get_flow_estimator
from .config import PropagationConfig
from .synthesis import _Key, frame_seed, prepare_key, synthesize_frame

logger = logging.getLogger(__package__)


@dataclass
class FrameFlows:
    """Candidate flows from one non-key frame to its left and right keys ([H, W, 2] float32, t -> key)."""

    to_left: list[torch.Tensor] = field(default_factory=list)
    to_right: list[torch.Tensor] = field(default_factory=list)


def key_segments(num_frames: int, key_indices: Sequence[int]) -> list[tuple[int | None, int | None, list[int]]]:
    """(left key or None, right key or None, the non-key frames between) for every stretch without keys."""
    keys = list(key_indices)
    out = []
    bounds = [None, *keys, None]
    for left, right in zip(bounds, bounds[1:]):
        lo = 0 if left is None else left + 1
        hi = num_frames if right is None else right
        if hi > lo:
            out.append((left, right, list(range(lo, hi))))
    return out


def estimate_propagation_flows(
    frames: np.ndarray,
    key_indices: Sequence[int],
    config: PropagationConfig | None = None,
    estimator: FlowEstimator | None = None,
) -> dict[int, FrameFlows]:
    """Flows from every non-key frame to its keys: direct (one estimate) and, if configured, chained.

    frames: [N, H, W, 3] uint8. Chained flow t -> L = flow(t -> t-1) composed with flow(t-1 -> L), built outward
    from the key, so one consecutive flow per frame and side. Returns {t: FrameFlows} (CPU tensors); pass it to
    :func:`propagate` to reuse flows across several stylizations of the same video.
    """
    cfg = config or PropagationConfig()
    frames = _check_frames(frames)
    keys = _check_keys(key_indices, len(frames))
    est = estimator or get_flow_estimator(cfg.flow)
    out: dict[int, FrameFlows] = {}

    def flow(a: int, b: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(est(frames[a], frames[b])))

    for left, right, between in key_segments(len(frames), keys):
        for t in between:
            out[t] = FrameFlows()
        for key, order, attr in ((left, between, "to_left"), (right, between[::-1], "to_right")):
            if key is None:
                continue
            chained = None
            for t in order:
                direct = flow(t, key)
                getattr(out[t], attr).append(direct)
                if not cfg.chained_flow:
                    continue
                step = 1 if t > key else -1
                if abs(t - key) == 1:
                    chained = direct
                else:
                    chained = compose_flows(flow(t, t - step)[None], chained[None])[0]
                    getattr(out[t], attr).append(chained)
    return out


def _check_frames(frames):
    """An array as is (checked), a list as an array, or a frame source (len, [i], [a:b]) checked on its first frame."""
    if isinstance(frames, (np.ndarray, list, tuple)):
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
            raise ConfigError("frames", "[N >= 1, H, W, 3] uint8 RGB", f"{arr.dtype} {arr.shape}")
        return arr
    first = np.asarray(frames[0]) if len(frames) else None
    if first is None or first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ConfigError("frames", "a frame source of [H, W, 3] uint8 RGB frames", type(frames).__name__)
    return frames


def _check_keys(key_indices: Sequence[int], n: int) -> list[int]:
    keys = [int(k) for k in key_indices]
    if not keys or any(k < 0 or k >= n for k in keys) or any(b <= a for a, b in zip(keys, keys[1:])):
        raise ConfigError("key_indices", f"strictly ascending frame indices in [0, {n - 1}], at least one", keys)
    return keys


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float() / 255.0


def propagate(
    frames: np.ndarray | Sequence[np.ndarray],
    key_indices: Sequence[int],
    stylized_keys: Sequence[np.ndarray],
    config: PropagationConfig | None = None,
    **options,
) -> list[np.ndarray]:
    """Every frame of the video stylized from the stylized keyframes (paper §3.5), as a list: :func:`iter_propagate`
    collected (its options: ``device``, ``flows``, ``estimator``, ``progress``, ``should_stop``)."""
    return list(iter_propagate(frames, key_indices, stylized_keys, config, **options))


def iter_propagate(
    frames,
    key_indices: Sequence[int],
    stylized_keys: Sequence[np.ndarray],
    config: PropagationConfig | None = None,
    *,
    device: str | torch.device | None = None,
    flows: dict[int, FrameFlows] | None = None,
    estimator: FlowEstimator | None = None,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    start: int = 0,
    end: int | None = None,
) -> Iterator[np.ndarray]:
    """Every frame of the video stylized from the stylized keyframes (paper §3.5), yielded in frame order as each
    key segment finishes: memory holds two segments, not the video.

    frames: the source video, indexable by frame index and by slice, with a length (an [N, H, W, 3] uint8 RGB array,
    or a :class:`~fresco_v2v.video.FrameReader`, read from this thread only); key_indices: ascending frame indices
    of the keys; stylized_keys: one [H, W, 3] uint8 RGB image per key (a sequence, which may read each image when
    indexed, as :class:`fresco_v2v.run_files.KeyImages` does). device: where the synthesis runs (default
    CPU); flows: from :func:`estimate_propagation_flows`, to reuse them (computed per segment otherwise).
    should_stop: asked before each frame and each key segment; when it returns True, the frames not started are
    dropped and :class:`~fresco_v2v.errors.Cancelled` is raised (a user's Stop). The keys are yielded unchanged.
    start: 0, or a key index: yield frames ``start``.. only, rendering none before it (a resumed run). Every frame
    is rendered from its own segment and seed, so the frames from ``start`` on are those of a run from 0.
    end: None (the last frame), or a key index after ``start``: frames before ``end`` only, reading only the
    stylized keys they need (a cluster's chunk task, whose later keys may not exist yet).
    """
    cfg = config or PropagationConfig()
    if not isinstance(cfg, PropagationConfig):
        raise ConfigError("config", "a PropagationConfig", type(cfg).__name__)
    frames = _check_frames(frames)
    n = len(frames)
    h, w = np.asarray(frames[0]).shape[:2]
    keys = _check_keys(key_indices, n)
    if start != 0 and start not in keys:
        raise ConfigError("start", f"0 or a key index ({keys[:5]}...)", start)
    end = n if end is None else end
    if end != n and (end not in keys or end <= start):
        raise ConfigError("end", f"None or a key index after start {start} ({keys[:5]}...)", end)
    segments = [seg for seg in key_segments(n, keys) if seg[2][-1] >= start and seg[2][0] < end]
    used = {k for left, right, _ in segments for k in (left, right) if k is not None} | set(range(start, end))
    _check_stylized_keys(stylized_keys, [i for i, k in enumerate(keys) if k in used], len(keys), h, w)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    run = _Run(frames, keys, stylized_keys, cfg, dev, should_stop)
    est = estimator or get_flow_estimator(cfg.flow)
    key_position = {k: i for i, k in enumerate(keys)}  # keys are read when yielded: they may be read lazily
    workers = cfg.workers if cfg.workers is not None else (torch.get_num_threads() if dev.type == "cpu" else 1)
    bar = tqdm(total=sum(len(b) for _, _, b in segments), desc="propagating", unit="frame", disable=not progress)
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="propagate") if workers > 1 else None
    if pool is not None and dev.type == "cpu":
        torch.set_num_threads(max(1, threads // workers))  # the same total: `workers` frames at a time
    in_flight: list[dict] = []  # per segment: {future: frame index}
    done: dict[int, np.ndarray] = {}  # rendered frames not yet yielded (at most two segments')
    next_out = start

    def collect(futures: dict) -> None:
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            bar.update(1)

    def ready() -> Iterator[np.ndarray]:
        nonlocal next_out
        while next_out < end and (next_out in done or next_out in key_position):
            if next_out in done:
                yield done.pop(next_out)
            else:
                yield np.array(stylized_keys[key_position[next_out]], copy=True)
            next_out += 1

    try:
        for left, right, between in segments:
            run.check_stop()
            logger.info("propagating frames %d-%d from keys %s, %s", between[0], between[-1], left, right)
            lo = min(between + [k for k in (left, right) if k is not None])
            hi = max(between + [k for k in (left, right) if k is not None])
            seg = np.asarray(frames[lo : hi + 1])  # [L, H, W, 3]: the segment's source frames, read once
            seg_flows = flows
            if seg_flows is None or any(t not in seg_flows for t in between):
                seg_flows = _segment_flows(seg, lo, left, right, cfg, est)
            jobs = run.segment_jobs(left, right, between, seg_flows, seg, lo)
            if pool is None:
                for t, job in jobs.items():
                    done[t] = run.render(t, *job)
                    bar.update(1)
            else:
                in_flight.append({pool.submit(run.render, t, *job): t for t, job in jobs.items()})
                # Two segments in flight: the workers go on with this one while the next one's key state and flows
                # are prepared here, and no worker idles at a segment's end. More would hold more key states
                # (~100 MB each at 512x512).
                while len(in_flight) > 1:
                    collect(in_flight.pop(0))
            yield from ready()
        while in_flight:
            collect(in_flight.pop(0))
        yield from ready()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            torch.set_num_threads(threads)
        bar.close()


def _check_stylized_keys(stylized_keys: Sequence[np.ndarray], used: list[int], num_keys: int, h: int, w: int) -> None:
    """One image per key; those at positions ``used`` (the ones this call reads) [h, w, 3] uint8."""
    if len(stylized_keys) != num_keys:
        raise ConfigError("stylized_keys", f"{num_keys} images (one per key)", len(stylized_keys))
    for i in used:
        s = np.asarray(stylized_keys[i])
        if s.shape != (h, w, 3) or s.dtype != np.uint8:
            raise ConfigError(f"stylized_keys[{i}]", f"a [{h}, {w}, 3] uint8 RGB image", f"{s.dtype} {s.shape}")


def _segment_flows(
    seg: np.ndarray, lo: int, left: int | None, right: int | None, cfg: PropagationConfig, est
) -> dict[int, FrameFlows]:
    """The flows of one key segment's frames ({frame index: FrameFlows}), estimated over the segment alone
    (``seg``: its frames ``lo``.., keys included)."""
    local = estimate_propagation_flows(seg, [k - lo for k in (left, right) if k is not None], cfg, est)
    return {t + lo: v for t, v in local.items()}


class _Run:
    """One :func:`propagate` call's inputs and the key states in use; renders its frames (from any thread)."""

    def __init__(self, frames, keys: list[int], stylized_keys, cfg: PropagationConfig, dev, should_stop):
        self.frames, self.keys, self.stylized_keys = frames, keys, stylized_keys
        self.cfg, self.dev, self.should_stop = cfg, dev, should_stop
        self.cache: dict[int, _Key] = {}

    def key_state(self, k: int, source: np.ndarray) -> _Key:
        """Key ``k``'s state, prepared from its source frame ``source`` the first time it is needed."""
        if k not in self.cache:
            if len(self.cache) >= 2:  # segments go left to right: only the current two keys are needed again
                self.cache.pop(min(self.cache))
            src = _to_tensor(source, self.dev)
            sty = _to_tensor(np.asarray(self.stylized_keys[self.keys.index(k)]), self.dev)
            self.cache[k] = prepare_key(k, src, sty, self.cfg)
        return self.cache[k]

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"propagation stopped (of {len(self.frames) - len(self.keys)} frames to render)")

    def segment_jobs(
        self,
        left: int | None,
        right: int | None,
        between: list[int],
        seg_flows: dict[int, FrameFlows],
        seg: np.ndarray,
        lo: int,
    ):
        """{t: (sides, target frame)} for the frames of one segment (``seg``: its source frames ``lo``.., keys
        included), sides as :func:`synthesize_frame` takes them."""
        jobs = {}
        with torch.no_grad():  # the keys' states are built here, before any thread reads them
            for t in between:
                ff = seg_flows[t]
                target = seg[t - lo]
                if left is not None and right is not None:
                    wl = (right - t) / (right - left)
                    sides = [
                        (self.key_state(left, seg[left - lo]), ff.to_left, wl),
                        (self.key_state(right, seg[right - lo]), ff.to_right, 1.0 - wl),
                    ]
                elif left is not None:
                    sides = [(self.key_state(left, seg[left - lo]), ff.to_left, 1.0)]
                else:
                    sides = [(self.key_state(right, seg[right - lo]), ff.to_right, 1.0)]
                jobs[t] = (sides, target)
        return jobs

    def render(self, t: int, sides, target: np.ndarray) -> np.ndarray:
        self.check_stop()
        gen = torch.Generator(device=self.dev).manual_seed(frame_seed(self.cfg.seed, t))
        with torch.no_grad():
            res = synthesize_frame(_to_tensor(target, self.dev), sides, self.cfg, gen)
        return (res * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
