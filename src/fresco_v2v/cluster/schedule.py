"""Which keyframe batch a free GPU worker takes next, and a simulator of whole schedules (``benchmarks/cluster.py``).

Each video is a chain: its batch k needs batch k-1's anchor latents (paper §3.5: the anchor frames are shared across
batches), so a video's batches run in order, one at a time, while batches of different videos run side by side. The
rule, list scheduling by the longest remaining chain (Hu's critical-path rule for chains): a free worker takes the
ready batch of the video with the most batch time left, preferring, among videos within ``affinity`` of that, one
whose model its pipeline already holds (a reload costs a model load). Costs are estimates (a video's batch count x
its frames per batch x steps); only their order and sums matter.
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


def pick_next(
    ready: Mapping[str, float], signatures: Mapping[str, object], loaded: object = None, affinity: float = 0.0
) -> str | None:
    """The video whose next batch a free worker should take: ``ready`` maps each video with a batch ready (its
    previous batch done, none of its batches running) to its remaining batch time (this batch included).

    The longest remaining chain first; a video of the worker's ``loaded`` signature wins when its remaining time is
    within ``affinity`` (a fraction) of the longest. Ties: the video named first in ``ready`` (manifest order).
    """
    if not ready:
        return None
    longest = max(ready.values())
    best = next(v for v, left in ready.items() if left == longest)
    if loaded is None or signatures.get(best) == loaded:
        return best
    near = [v for v, left in ready.items() if signatures.get(v) == loaded and left >= (1.0 - affinity) * longest]
    return near[0] if near else best


@dataclass(frozen=True)
class Schedule:
    """A simulated run: when it ends, each worker's busy time, and the model loads it needed."""

    makespan: float
    busy: tuple[float, ...]
    loads: int

    def busy_share(self) -> tuple[float, ...]:
        return tuple(b / self.makespan if self.makespan else 0.0 for b in self.busy)


def lower_bound(chains: Sequence[Chain], workers: int) -> float:
    """No schedule ends sooner than the total work spread over every worker, nor than the longest chain."""
    return max(sum(sum(c.costs) for c in chains) / workers, max((sum(c.costs) for c in chains), default=0.0))


def simulate_interleaved(chains: Sequence[Chain], workers: int, load_cost: float = 0.0, affinity: float = 0.1):
    """The schedule :func:`pick_next` makes: event by event, each free worker takes the chosen ready batch."""
    remaining = {c.video: sum(c.costs) for c in chains}
    nxt = {c.video: 0 for c in chains}
    costs = {c.video: c.costs for c in chains}
    sig = {c.video: c.signature for c in chains}
    running: set[str] = set()
    loaded: list[object] = [None] * workers
    busy = [0.0] * workers
    free = list(range(workers))  # idle workers, now
    events: list[tuple[float, int, str]] = []  # (end time, worker, video)
    now, loads = 0.0, 0
    while True:
        ready = {v: remaining[v] for v in remaining if v not in running and nxt[v] < len(costs[v])}
        while free and ready:
            w = free.pop(0)
            v = pick_next(ready, sig, loaded[w], affinity)
            extra = 0.0
            if loaded[w] != sig[v]:
                loaded[w], extra, loads = sig[v], load_cost, loads + 1
            cost = costs[v][nxt[v]] + extra
            busy[w] += cost
            running.add(v)
            del ready[v]
            heapq.heappush(events, (now + cost, w, v))
        if not events:
            return Schedule(now, tuple(busy), loads)
        now, w, v = heapq.heappop(events)
        running.discard(v)
        remaining[v] -= costs[v][nxt[v]]
        nxt[v] += 1
        free.append(w)


def simulate_whole_videos(chains: Sequence[Chain], workers: int, load_cost: float = 0.0) -> Schedule:
    """The schedule of a shell loop per GPU: each worker takes the next whole video in manifest order."""
    ends = [(0.0, w) for w in range(workers)]
    busy = [0.0] * workers
    loaded: list[object] = [None] * workers
    loads = 0
    for c in chains:
        t, w = heapq.heappop(ends)
        cost = sum(c.costs)
        if loaded[w] != c.signature:
            loaded[w], cost, loads = c.signature, cost + load_cost, loads + 1
        busy[w] += cost
        heapq.heappush(ends, (t + cost, w))
    return Schedule(max(t for t, _ in ends), tuple(busy), loads)
