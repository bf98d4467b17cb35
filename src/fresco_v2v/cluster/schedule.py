"""Which keyframe batch a free GPU worker takes next, and a simulator of whole schedules (``benchmarks/cluster.py``).

Each video is a chain: its batch k needs batch k-1's anchor latents (paper §3.5: the anchor frames are shared across
batches), so a video's batches run in order, one at a time, while batches of different videos run side by side.
After its last batch a video's propagation and assembly run on CPUs. The rule: a chain whose remaining batch time
reaches the work left per worker could decide when the GPUs finish, so among those the longest goes first (Hu's
critical-path rule for chains); while no chain is that long, the shortest goes first, so that videos finish early
and their propagation runs beside the other videos' batches instead of all at the end (shortest remaining
processing time). Among videos within ``affinity`` of the chosen one, one whose model the worker's pipeline already
holds wins (a reload costs a model load). Costs are estimates (frames per batch); only their order and sums matter.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chain:
    """One video's keyframe batches, in order: their estimated costs and the model signature they need."""

    video: str
    costs: tuple[float, ...]
    signature: object = None
    #: The CPU work after the last batch (propagation and assembly), in the same time units.
    finish: float = 0.0


def pick_next(
    ready: Mapping[str, float],
    signatures: Mapping[str, object],
    loaded: object = None,
    affinity: float = 0.0,
    critical: float | None = None,
) -> str | None:
    """The video whose next batch a free worker should take: ``ready`` maps each video with a batch ready (its
    previous batch done, none of its batches running) to its remaining batch time (this batch included).

    ``critical``: the remaining batch time of every unfinished video over the number of workers (None: every chain
    counts as critical). The longest of the chains that reach it, where a video of the worker's ``loaded`` signature
    wins when its remaining time is within ``affinity`` (a fraction) of the longest; while none reaches it, the
    shortest chain, of the loaded signature's videos when there are any (and ``affinity`` is not 0). Ties: the video
    named first in ``ready`` (manifest order).
    """
    if not ready:
        return None
    urgent = {v: left for v, left in ready.items() if critical is None or left >= critical}
    pool = urgent or ready
    choose = max if urgent else min  # the longest critical chain, else the shortest
    best = choose(pool, key=pool.__getitem__)
    if loaded is None or signatures.get(best) == loaded or affinity <= 0:
        return best
    same = {v: left for v, left in pool.items() if signatures.get(v) == loaded}
    if not same:
        return best
    near = choose(same, key=same.__getitem__)
    # a loaded model's video wins when its remaining time is within ``affinity`` of the chosen one's (critical
    # chains), or whenever no chain is critical
    return near if not urgent or same[near] >= (1.0 - affinity) * pool[best] else best


@dataclass(frozen=True)
class Schedule:
    """A simulated run: when it ends (the last video's finish included), each worker's busy time, the model loads
    it needed, and when the GPU workers' last batch ended."""

    makespan: float
    busy: tuple[float, ...]
    loads: int
    gpu_end: float = 0.0

    def busy_share(self) -> tuple[float, ...]:
        return tuple(b / self.gpu_end if self.gpu_end else 0.0 for b in self.busy)


def lower_bound(chains: Sequence[Chain], workers: int, cpus: int | None = None) -> float:
    """No schedule ends sooner than the total batch work spread over every worker, nor than the longest chain
    (with ``cpus``: its finish included, and the finish work spread over the CPUs)."""
    gpu = max(sum(sum(c.costs) for c in chains) / workers, max((sum(c.costs) for c in chains), default=0.0))
    if cpus is None:
        return gpu
    cpu = sum(c.finish for c in chains) / cpus
    return max(gpu, cpu, max((sum(c.costs) + c.finish for c in chains), default=0.0))


class _Finishes:
    """The CPU stage of a simulation: each video's finish starts when its last batch ends and a CPU is free."""

    def __init__(self, cpus: int | None):
        self.cpus = cpus
        self.free_at = [0.0] * (cpus or 1)
        self.end = 0.0

    def add(self, ready_at: float, cost: float) -> None:
        if self.cpus is None or cost == 0:
            self.end = max(self.end, ready_at + cost)
            return
        i = min(range(len(self.free_at)), key=self.free_at.__getitem__)
        self.free_at[i] = max(self.free_at[i], ready_at) + cost
        self.end = max(self.end, self.free_at[i])


def simulate_interleaved(
    chains: Sequence[Chain],
    workers: int,
    load_cost: float = 0.0,
    affinity: float = 0.1,
    cpus: int | None = None,
    critical: bool = True,
) -> Schedule:
    """The schedule :func:`pick_next` makes: event by event, each free worker takes the chosen ready batch; a
    video's finish runs on one of ``cpus`` CPUs (None: as many as needed) once its last batch ends.
    ``critical``: False for the longest chain first always (the rule before the CPU stage counted)."""
    remaining = {c.video: sum(c.costs) for c in chains}
    nxt = {c.video: 0 for c in chains}
    costs = {c.video: c.costs for c in chains}
    sig = {c.video: c.signature for c in chains}
    finish = {c.video: c.finish for c in chains}
    running: set[str] = set()
    loaded: list[object] = [None] * workers
    busy = [0.0] * workers
    free = list(range(workers))  # idle workers, now
    events: list[tuple[float, int, str]] = []  # (end time, worker, video)
    now, loads = 0.0, 0
    cpu = _Finishes(cpus)
    for v in remaining:
        if not costs[v]:
            cpu.add(0.0, finish[v])
    while True:
        ready = {v: remaining[v] for v in remaining if v not in running and nxt[v] < len(costs[v])}
        share = sum(remaining.values()) / workers if critical else None
        while free and ready:
            w = free.pop()  # the worker freed last first: it holds the model of the batch that just ended
            v = pick_next(ready, sig, loaded[w], affinity, share)
            extra = 0.0
            if loaded[w] != sig[v]:
                loaded[w], extra, loads = sig[v], load_cost, loads + 1
            cost = costs[v][nxt[v]] + extra
            busy[w] += cost
            running.add(v)
            del ready[v]
            heapq.heappush(events, (now + cost, w, v))
        if not events:
            return Schedule(max(now, cpu.end), tuple(busy), loads, now)
        now, w, v = heapq.heappop(events)
        running.discard(v)
        remaining[v] -= costs[v][nxt[v]]
        nxt[v] += 1
        free.append(w)
        if nxt[v] == len(costs[v]):
            cpu.add(now, finish[v])


def simulate_whole_videos(
    chains: Sequence[Chain], workers: int, load_cost: float = 0.0, cpus: int | None = None
) -> Schedule:
    """The schedule of a shell loop per GPU: each worker takes the next whole video in manifest order (its finish
    on one of ``cpus`` CPUs, as in :func:`simulate_interleaved`)."""
    ends = [(0.0, w) for w in range(workers)]
    busy = [0.0] * workers
    loaded: list[object] = [None] * workers
    loads = 0
    done: list[tuple[float, float]] = []  # (last batch end, finish cost)
    for c in chains:
        t, w = heapq.heappop(ends)
        cost = sum(c.costs)
        if loaded[w] != c.signature:
            loaded[w], cost, loads = c.signature, cost + load_cost, loads + 1
        busy[w] += cost
        heapq.heappush(ends, (t + cost, w))
        done.append((t + cost, c.finish))
    cpu = _Finishes(cpus)
    for ready_at, f in sorted(done):
        cpu.add(ready_at, f)
    gpu_end = max(t for t, _ in ends)
    return Schedule(max(gpu_end, cpu.end), tuple(busy), loads, gpu_end)
