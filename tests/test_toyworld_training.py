"""benchmarks/toyworld/train.py: the VAE's latent-colour term must make the first three latent channels carry the
4x4 block mean colour (the measure that made the toy world's VAE keep colour, issue 24), and the training loop must
stay deterministic for a seed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

TOYWORLD = Path(__file__).resolve().parents[1] / "benchmarks" / "toyworld"


@pytest.fixture(scope="module")
def train():
    sys.path.insert(0, str(TOYWORLD))  # train.py imports its sibling vae_probe.py, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("toyworld_train", TOYWORLD / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOYWORLD))
    return module


def small_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,  # two downsamplers: latent factor 4, as the toy VAE
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )


def colour_error(vae, images: np.ndarray) -> float:
    """Mean |first three latent channels - 4x4 block mean colour| (the term's own measure, in [-1, 1] units)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    return float((z[:, :3] - F.avg_pool2d(x, 4)).abs().mean())


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (12, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.kron(s, np.ones((8, 8, 1), np.uint8)) for s in smooth])  # [12, 32, 32, 3] blocky colours


def test_latent_colour_term_pulls_the_latent_to_the_block_colour(train, images):
    errors = {}
    for weight in (0.0, 1.0):
        vae = small_vae(0)
        train.train_vae(vae, images, 150, torch.Generator().manual_seed(0), batch=4, crop=16, colour=weight)
        errors[weight] = colour_error(vae, images)
    assert errors[1.0] < 0.5 * errors[0.0], errors


def test_train_vae_is_deterministic_for_a_seed(train, images):
    runs = []
    for _ in range(2):
        vae = small_vae(1)
        curve = train.train_vae(vae, images, 4, torch.Generator().manual_seed(3), batch=2, crop=16, flat=0.5, colour=1)
        runs.append((curve, [p.detach().clone() for p in vae.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
