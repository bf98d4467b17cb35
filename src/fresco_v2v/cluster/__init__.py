"""Many videos on several GPUs: `fresco batch`.

- :mod:`.manifest`: the manifest's videos, each a validated RunConfig into its own folder of OUTROOT.
- :mod:`.schedule`: which keyframe batch a free GPU worker takes next (the longest remaining chain first), and a
  simulator of whole schedules for ``benchmarks/cluster.py``.
- :mod:`.run`: the driver and workers on Ray Core (``translate_many``; imported on use: Ray is the optional extra
  ``fresco-v2v[cluster]``).
"""

from .manifest import ManifestEntry, read_manifest
from .schedule import Chain, Schedule, lower_bound, pick_next, simulate_interleaved, simulate_whole_videos

__all__ = [
    "Chain",
    "ManifestEntry",
    "Schedule",
    "lower_bound",
    "pick_next",
    "read_manifest",
    "simulate_interleaved",
    "simulate_whole_videos",
]
