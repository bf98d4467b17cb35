"""The dependency floors of pyproject.toml hold for what is installed, and what we use is there (README "Versions")."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def test_the_floors_the_readme_explains():
    reqs = _requirements()
    assert str(reqs["torch"].specifier) == ">=2.6"  # weights_only loads safe from 2.6.0 (CVE-2025-32434)
    assert str(reqs["av"].specifier) == ">=14.1"  # VideoFrame.rotation


@pytest.mark.parametrize("name", sorted(_requirements()))
def test_installed_version_meets_its_requirement(name):
    version = importlib.metadata.version(name)
    base = re.match(r"[0-9.]+", version).group(0).rstrip(".")  # 2.13.0+cpu -> 2.13.0
    assert _requirements()[name].specifier.contains(base, prereleases=True), (name, version)


def test_what_we_use_is_there():
    import av
    import torch

    assert hasattr(av.VideoFrame, "rotation")
    params = inspect.signature(torch.load).parameters
    assert "weights_only" in params and "mmap" in params
