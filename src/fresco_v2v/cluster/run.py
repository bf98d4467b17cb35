"""`fresco batch` on Ray Core: every video of a manifest, keyframe batches interleaved over the GPU workers.

The driver (this process) reads and plans each video (the decoding pass, Alg. 1's keyframes, the batches; a bad file
fails that video only) and holds each output folder's lock. One actor per GPU (``num_gpus=1``; one CPU actor where
the cluster has no GPU) loads a pipeline once per model signature and keeps it; a free actor takes the ready batch
that :func:`~fresco_v2v.cluster.schedule.pick_next` chooses. A video's batches run in order (batch k needs batch
k-1's anchors, §3.5), read with the flow chain from the video's state folder: frames, keys and chunks travel through
OUTROOT (shared storage), not through Ray's object store. Each chunk of the output (a few seconds of frames between
keys) is propagated and encoded by a CPU task as soon as the batches holding its keys are done, while the video's
later batches still run; one more task assembles the video when its chunks are made.

Nothing is lost: an actor that dies is restarted and its batch retried (Ray's ``max_restarts`` and
``max_task_retries``; a task's ``max_retries``), and a retried batch, chunk or video resumes from what its folder
holds (a finished batch or chunk is never redone); a video that fails for its own reason is reported and the others
go on. OUTROOT/batch.json says where each video stands while the batch runs and at its end.
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

    def translate(self, plan, b: int, anchors=None) -> tuple[float, object]:
        """Batch ``b`` of ``plan`` from batch b-1's ``anchors`` (``runner.translate_one_batch``, which reads them
        from the state folder when None); returns its seconds and its anchors, for batch b+1."""
        from ..runner import load_run_pipeline, pipeline_signature, translate_one_batch

        t0 = time.perf_counter()
        signature = pipeline_signature(plan.cfg)
        if signature != self.signature:
            self.pipe = self.signature = None  # free the old model before loading the next
            self.pipe, self.signature = load_run_pipeline(plan.cfg), signature
        made = translate_one_batch(plan, b, self.pipe, anchors)
        return time.perf_counter() - t0, made

    def pid(self) -> int:
        import os

        return os.getpid()


def propagate_chunk_task(plan, c: int, threads: int | None = None) -> float:
    """Chunk ``c`` of a video propagated and encoded (a Ray task: ``assembly.propagate_chunk``); its seconds."""
    import torch

    from ..assembly import propagate_chunk

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    propagate_chunk(plan, c)
    return time.perf_counter() - t0


def assemble_task(plan) -> dict:
    """A video whose chunks are all made, assembled with its audio (a Ray task); its run report."""
    from ..assembly import assemble_chunks

    return assemble_chunks(plan).report


@dataclass
class VideoRun:
    """One video of the batch, as the driver follows it."""

    name: str
    plan: object = None  # runner.RunPlan, with its folder lock (kept here)
    next_batch: int = 0
    running: bool = False
    status: str = "waiting"  # waiting, translating, propagating, assembling, done, failed
    error: str | None = None
    #: Per output chunk: the batches it needs done (``assembly.batches_needed``), and waiting/running/done.
    chunk_needs: list[int] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    #: The last finished batch's anchors (a Ray object reference: small, a few MB), for the next batch.
    anchors: object = None
    seconds: dict = field(default_factory=lambda: {"plan": 0.0, "translate": 0.0, "propagate": 0.0, "assemble": 0.0})
    started: float = 0.0

    @property
    def batches_left(self) -> float:
        """Remaining batch time, estimated by frames per batch (what :func:`pick_next` compares)."""
        return float(sum(len(b) for b in self.plan.batches[self.next_batch :]))

    def ready_chunks(self) -> list[int]:
        """The chunks not started whose keyframes all exist."""
        return [c for c, st in enumerate(self.chunks) if st == "waiting" and self.chunk_needs[c] <= self.next_batch]

    def fail(self, error: BaseException | str) -> None:
        self.status, self.running = "failed", False
        self.error = error if isinstance(error, str) else _reason(error)
        logger.warning("%s failed: %s", self.name, self.error)

    def to_dict(self) -> dict:
        keys = list(self.plan.keys) if self.plan is not None else []
        out = str(self.plan.out) if self.plan is not None else None
        batches = len(self.plan.batches) if self.plan is not None else 0
        return {
            "name": self.name, "status": self.status, "error": self.error, "output": out,
            "batches": f"{self.next_batch}/{batches}", "chunks": f"{self.chunks.count('done')}/{len(self.chunks)}",
            "keyframes": keys, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }  # fmt: skip


def _reason(error: BaseException) -> str:
    """What to report of a failure: our own message, or the cause a Ray error wraps."""
    cause = getattr(error, "cause", None) or error
    return str(cause) if isinstance(cause, FrescoError) else f"{type(cause).__name__}: {cause}"


def _plan(entry: ManifestEntry) -> VideoRun:
    from ..assembly import batches_needed, output_chunks
    from ..encode import chunk_files
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
    video.chunk_needs = batches_needed(video.plan)
    files = chunk_files(video.plan.state / "chunks", output_chunks(video.plan))
    video.chunks = ["done" if f.is_file() else "waiting" for f in files]  # nor the chunks it made
    video.status = "translating" if video.next_batch < len(video.plan.batches) else "propagating"
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
    default all). Writes OUTROOT/batch.json and returns its videos (status, error, batches and chunks done, seconds
    per stage, keyframes). ``worker_threads``: torch threads of each worker and chunk task (default: Ray's, one per
    CPU it holds); ``worker_class(*worker_args)`` is each GPU actor (default: a :class:`BatchWorker` of
    ``worker_threads``). ``progress``: a bar over every batch and chunk, and a line per video as it changes stage."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address, num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
            logging_level=logging.WARNING, log_to_driver=False,
        )  # fmt: skip
    driver = None
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        # num_cpus=0: an actor holding a CPU slot would leave the chunk tasks none on a small machine (2 actors
        # on 2 CPUs waited forever); its own threads are set by worker_threads.
        options = {"num_gpus": 1 if gpus else 0, "num_cpus": 0, "max_restarts": RETRIES, "max_task_retries": RETRIES}
        actor = ray.remote(**options)(worker_class)
        args = (worker_threads,) if worker_args is None else worker_args
        workers = [actor.remote(*args) for _ in range(max(gpus, 1))]
        driver = _Driver(ray, workers, worker_threads, affinity, Path(outroot), progress)
        driver.run(entries)
    finally:
        if driver is not None:
            driver.close()
        if started_here:
            ray.shutdown()
    return driver.report()


class _Driver:
    """The driver's loop: plans the videos one by one while the workers start, gives free workers ready batches
    (:func:`pick_next`), starts each chunk task once its keyframes exist and each video's assembly once its chunks
    are made, and keeps OUTROOT/batch.json current."""

    def __init__(self, ray, workers: list, threads: int | None, affinity: float, outroot: Path, progress: bool):
        from tqdm.auto import tqdm

        self.ray, self.workers, self.threads, self.affinity, self.outroot = ray, workers, threads, affinity, outroot
        self.chunk_task = ray.remote(max_retries=RETRIES)(propagate_chunk_task)
        self.assemble_task = ray.remote(max_retries=RETRIES)(assemble_task)
        self.videos: list[VideoRun] = []
        self.signatures: dict[str, tuple] = {}
        self.free, self.loaded = list(range(len(workers))), [None] * len(workers)
        # ref -> (video, what: ("batch", its anchors' ref), ("chunk", c) or ("assemble", None), worker or None)
        self.pending: dict = {}
        self.progress = progress
        self.bar = tqdm(total=0, desc="batches, chunks, assemblies", unit="task", disable=not progress)

    def run(self, entries: list[ManifestEntry]) -> None:
        from ..runner import pipeline_signature

        todo = list(entries)
        while True:
            self.hand_out()
            if todo:  # plan the next video while the workers take what is ready
                v = _plan(todo.pop(0))
                self.videos.append(v)
                if v.plan is not None:
                    self.signatures[v.name] = pipeline_signature(v.plan.cfg)
                    self.bar.total += len(v.plan.batches) + len(v.chunks) + 1  # + its assembly
                    self.bar.update(v.next_batch + v.chunks.count("done"))
                self.say(v)
            elif not self.pending:
                return
            if self.pending:  # what has ended (without waiting while videos remain to plan)
                wait = {"num_returns": len(self.pending), "timeout": 0} if todo else {"num_returns": 1}
                for ref in self.ray.wait(list(self.pending), **wait)[0]:
                    self.collect(ref)

    def hand_out(self) -> None:
        """Free workers take ready batches; ready chunks and assemblies start as CPU tasks."""
        active = [v for v in self.videos if v.status in ("translating", "propagating")]
        ready = {v.name: v.batches_left for v in active if v.status == "translating" and not v.running}
        critical = sum(v.batches_left for v in active) / len(self.workers)
        by_name = {v.name: v for v in self.videos}
        while self.free and ready:
            w = self.free.pop()  # the worker freed last first: it holds the model of the batch that just ended
            name = pick_next(ready, self.signatures, self.loaded[w], self.affinity, critical)
            v = by_name[name]
            del ready[name]
            v.running, self.loaded[w] = True, self.signatures[name]
            seconds, anchors = (
                self.workers[w]
                .translate.options(num_returns=2)
                .remote(replace(v.plan, lock=None), v.next_batch, v.anchors)
            )
            self.pending[seconds] = (v, ("batch", anchors), w)
        for v in active:
            plan = replace(v.plan, lock=None)
            for c in v.ready_chunks():
                v.chunks[c] = "running"
                self.pending[self.chunk_task.remote(plan, c, self.threads)] = (v, ("chunk", c), None)
            if v.chunks and all(st == "done" for st in v.chunks) and v.status != "assembling":
                v.status, v.started = "assembling", time.perf_counter()
                self.pending[self.assemble_task.remote(plan)] = (v, ("assemble", None), None)
                self.say(v)

    def collect(self, ref) -> None:
        v, what, w = self.pending.pop(ref)
        if w is not None:
            self.free.append(w)
        if v.status == "failed":  # a task of a video that failed meanwhile
            return
        try:
            result = self.ray.get(ref)
        except Exception as e:  # the video's own failure (RayTaskError wraps it), or retries used up
            v.fail(e)
            self.say(v)
            return
        if what[0] == "batch":
            v.running, v.next_batch, v.anchors = False, v.next_batch + 1, what[1]
            v.seconds["translate"] += result
            if v.next_batch == len(v.plan.batches):
                v.status, v.anchors = "propagating", None
                self.say(v)
        elif what[0] == "assemble":
            v.status, v.seconds["assemble"] = "done", time.perf_counter() - v.started
            self.say(v)
        else:
            v.chunks[what[1]] = "done"
            v.seconds["propagate"] += result
        self.bar.update(1)
        self.write()

    def say(self, v: VideoRun) -> None:
        """A line per video as it changes stage (with ``progress``), and batch.json anew."""
        if self.progress:
            d = v.to_dict()
            detail = d["error"] if v.error else f"batches {d['batches']}, chunks {d['chunks']}"
            self.bar.write(f"{v.name}: {v.status} ({detail})")
        logger.info("%s: %s", v.name, v.status)
        self.write()

    def report(self) -> list[dict]:
        return [v.to_dict() for v in self.videos]

    def write(self) -> None:
        write_json(self.outroot / "batch.json", {"workers": len(self.workers), "videos": self.report()})

    def close(self) -> None:
        for v in self.videos:
            if v.plan is not None:
                v.plan.lock.release()
        self.bar.close()
        self.write()
