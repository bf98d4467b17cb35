"""Test switches: like diffusers' slow tests, tests needing real weights or a GPU are opt-in.

- ``@pytest.mark.slow``: real weights / long runs; set FRESCO_RUN_SLOW=1.
- ``@pytest.mark.gpu``: a CUDA or MPS device; set FRESCO_RUN_GPU=1.
- ``@pytest.mark.shared_data``: reads ../shared/data/videos; skipped when that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def pytest_collection_modifyitems(config, items):
    switches = {
        "slow": ("FRESCO_RUN_SLOW", "needs real weights; set FRESCO_RUN_SLOW=1"),
        "gpu": ("FRESCO_RUN_GPU", "needs a GPU; set FRESCO_RUN_GPU=1"),
    }
    for item in items:
        for mark, (env, why) in switches.items():
            if mark in item.keywords and os.environ.get(env) != "1":
                item.add_marker(pytest.mark.skip(reason=why))
        if "shared_data" in item.keywords and not SHARED_VIDEOS.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_VIDEOS} not present"))


@pytest.fixture
def shared_videos() -> Path:
    return SHARED_VIDEOS
