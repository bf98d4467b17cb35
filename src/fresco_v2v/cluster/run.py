"""`fresco batch` on Ray Core: every video of a manifest, keyframe batches interleaved over the GPU workers.

The driver (this process) reads and plans each video (the decoding pass, Alg. 1's keyframes, the batches; a bad file
fails that video only) and holds each output folder's lock. One actor per GPU (``num_gpus=1``; one CPU actor where
the cluster has no GPU) loads a pipeline once per model signature and keeps it; a free actor takes the ready batch
that :func:`~fresco_v2v.cluster.schedule.pick_next` chooses. A video's batches run in order (batch k needs batch
k-1's anchors, §3.5), read with the flow chain from the video's state folder: frames, keys and chunks travel through
OUTROOT (shared storage), not through Ray's object store. When a video's last batch is done, a CPU task propagates
and assembles it.

Nothing is lost: an actor that dies is restarted and its batch retried (Ray's ``max_restarts`` and
``max_task_retries``), and a retried batch or video resumes from what its folder holds (a finished batch is never
redone); a video that fails for its own reason is reported and the others go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import FrescoError, InputError
from ..run_files import write_json
from .manifest import ManifestEntry
from .schedule import pick_next

logger = logging.getLogger(__name__)

#: Restarts of a dead actor, and retries of its task on the restarted one (a node lost mid-batch).
RETRIES = 2


def require_ray():
    try:
        import ray
    except ImportError:
        raise InputError("`fresco batch` needs Ray: pip install 'fresco-v2v[cluster]'") from None
    return ray


class BatchWorker:
    """A GPU worker (a Ray actor): translates keyframe batches, keeping its pipeline while the model stays."""

    def __init__(self, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.pipe, self.signature = None, None

    def translate(self, plan, b: int) -> float:
        """Batch ``b`` of ``plan`` (``runner.translate_one_batch``); returns its seconds."""
        from ..runner import load_run_pipeline, pipeline_signature, translate_one_batch

        t0 = time.perf_counter()
        signature = pipeline_signature(plan.cfg)
        if signature != self.signature:
            self.pipe = self.signature = None  # free the old model before loading the next
            self.pipe, self.signature = load_run_pipeline(plan.cfg), signature
        translate_one_batch(plan, b, self.pipe)
        return time.perf_counter() - t0

    def pid(self) -> int:
        import os

        return os.getpid()


def finish_video(plan, threads: int | None = None) -> dict:
    """Propagation and assembly of a video whose batches are done (a Ray task); its run report."""
    import torch

    from ..runner import finish_run

    if threads:
        torch.set_num_threads(threads)
    return finish_run(plan).report


@dataclass
class VideoRun:
    """One video of the batch, as the driver follows it."""

    name: str
    plan: object = None  # runner.RunPlan, with its folder lock (kept here)
    next_batch: int = 0
    running: bool = False
    status: str = "waiting"  # waiting, translating, propagating, done, failed
    error: str | None = None
    seconds: dict = field(default_factory=lambda: {"plan": 0.0, "translate": 0.0, "propagate_and_encode": 0.0})
    started: float = 0.0

    @property
    def batches_left(self) -> float:
        """Remaining batch time, estimated by frames per batch (what :func:`pick_next` compares)."""
        return float(sum(len(b) for b in self.plan.batches[self.next_batch :]))

    def fail(self, error: BaseException | str) -> None:
        self.status, self.running = "failed", False
        self.error = error if isinstance(error, str) else _reason(error)
        logger.warning("%s failed: %s", self.name, self.error)

    def to_dict(self) -> dict:
        keys = list(self.plan.keys) if self.plan is not None else []
        out = str(self.plan.out) if self.plan is not None else None
        return {"name": self.name, "status": self.status, "error": self.error, "output": out, "keyframes": keys}


def _reason(error: BaseException) -> str:
    """What to report of a failure: our own message, or the cause a Ray error wraps."""
    cause = getattr(error, "cause", None) or error
    return str(cause) if isinstance(cause, FrescoError) else f"{type(cause).__name__}: {cause}"


def _plan(entry: ManifestEntry) -> VideoRun:
    from ..runner import first_unfinished_batch, read_and_plan

    video = VideoRun(entry.name)
    if entry.config is None:
        video.fail(entry.error or "no config")
        return video
    t0 = time.perf_counter()
    try:
        video.plan = read_and_plan(entry.config, progress=False)
    except FrescoError as e:
        video.fail(e)
        return video
    video.seconds["plan"] = time.perf_counter() - t0
    video.next_batch = first_unfinished_batch(video.plan)  # the batches an earlier run finished are not redone
    video.status = "translating"
    return video


def translate_many(
    entries: list[ManifestEntry],
    outroot: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    worker_threads: int | None = None,
    affinity: float = 0.1,
    progress: bool = True,
    worker_class: type = BatchWorker,
    worker_args: tuple | None = None,
) -> list[dict]:
    """Translate every video of ``entries`` (``cluster.read_manifest``) on Ray; ``address``: an existing cluster
    ("auto", "ray://HOST:PORT"), else a local instance on this machine (``num_cpus``, ``num_gpus``: its resources,
    default all). Writes OUTROOT/batch.json and returns its videos (status, error, seconds, keyframes).
    ``worker_threads``: torch threads of each worker and finish task (default: Ray's, one per CPU it holds);
    ``worker_class(*worker_args)`` is each GPU actor (default: a :class:`BatchWorker` of ``worker_threads``)."""
    from tqdm.auto import tqdm

    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address, num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
            logging_level=logging.WARNING, log_to_driver=False,
        )  # fmt: skip
    videos = [_plan(e) for e in entries]
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        # num_cpus=0: an actor holding a CPU slot would leave the finish tasks none on a small machine (2 actors
        # on 2 CPUs waited forever); its own threads are set by worker_threads.
        options = {"num_gpus": 1 if gpus else 0, "num_cpus": 0, "max_restarts": RETRIES, "max_task_retries": RETRIES}
        actor = ray.remote(**options)(worker_class)
        args = (worker_threads,) if worker_args is None else worker_args
        workers = [actor.remote(*args) for _ in range(max(gpus, 1))]
        finish = ray.remote(max_retries=RETRIES)(finish_video)
        total = sum(len(v.plan.batches) for v in videos if v.plan is not None)
        with tqdm(total=total, desc="keyframe batches", unit="batch", disable=not progress) as bar:
            bar.update(sum(v.next_batch for v in videos if v.plan is not None))
            _run(ray, videos, workers, lambda plan: finish.remote(plan, worker_threads), affinity, bar)
    finally:
        for v in videos:
            if v.plan is not None:
                v.plan.lock.release()
        if started_here:
            ray.shutdown()
    report = [v.to_dict() | {"seconds": v.seconds} for v in videos]
    write_json(Path(outroot) / "batch.json", {"workers": len(workers), "videos": report})
    return report


def _run(ray, videos: list[VideoRun], workers: list, finish, affinity: float, bar) -> None:
    """The driver's loop: give free workers ready batches, start each video's finish (``finish(plan)``: a task's
    reference) once its batches are done."""
    from ..runner import pipeline_signature

    by_name = {v.name: v for v in videos}
    signatures = {v.name: pipeline_signature(v.plan.cfg) for v in videos if v.plan is not None}
    free, loaded = list(range(len(workers))), [None] * len(workers)
    pending: dict = {}  # ref -> (video, worker index or None for a finish task)

    def start_finish(v: VideoRun) -> None:
        v.status, v.started = "propagating", time.perf_counter()
        pending[finish(replace(v.plan, lock=None))] = (v, None)

    for v in videos:
        if v.status == "translating" and v.next_batch == len(v.plan.batches):
            start_finish(v)
    while True:
        ready = {v.name: v.batches_left for v in videos if v.status == "translating" and not v.running}
        while free and ready:
            w = free.pop(0)
            name = pick_next(ready, signatures, loaded[w], affinity)
            v = by_name[name]
            del ready[name]
            v.running, loaded[w] = True, signatures[name]
            pending[workers[w].translate.remote(replace(v.plan, lock=None), v.next_batch)] = (v, w)
        if not pending:
            return
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        v, w = pending.pop(ref)
        if w is not None:
            free.append(w)
        try:
            result = ray.get(ref)
        except Exception as e:  # the video's own failure (RayTaskError wraps it), or retries used up
            v.fail(e)
            continue
        if w is None:
            v.status, v.seconds["propagate_and_encode"] = "done", time.perf_counter() - v.started
            logger.info("%s done: %s", v.name, result.get("frames"))
            continue
        v.running, v.next_batch = False, v.next_batch + 1
        v.seconds["translate"] += result
        bar.update(1)
        if v.next_batch == len(v.plan.batches):
            start_finish(v)
