"""benchmarks/toyworld/vae_probe.py: its colour probe must tell an encoder that keeps flat colour from one that
loses it (the measurement behind the toy world's VAE recipe, issue 24)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "toyworld" / "vae_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("vae_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PoolingVAE:
    """A stand-in VAE: the latent is the image average-pooled 4x (plus a constant channel), scaled by ``keep``;
    decoding upsamples the first three channels. keep=1 carries colour, keep=0 loses it."""

    def __init__(self, keep: float):
        self.keep = keep

    def encode(self, x):  # [B, 3, H, W] -> [B, 4, H/4, W/4]
        z = F.avg_pool2d(x, 4) * self.keep
        z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z))

    def decode(self, z):
        return SimpleNamespace(sample=F.interpolate(z[:, :3], scale_factor=4, mode="nearest"))


def test_flat_patches_are_flat_probe_colours(probe):
    patches = probe.flat_patches(16)
    assert patches.shape == (len(probe.COLOURS), 16, 16, 3) and patches.dtype == np.uint8
    assert (patches == np.array(probe.COLOURS, np.uint8)[:, None, None]).all()


def test_round_trip_of_a_colour_keeping_vae_is_exact_on_flat_patches(probe):
    patches = probe.flat_patches(16)
    assert np.array_equal(probe.round_trip(PoolingVAE(1.0), patches), patches)
    grey = probe.round_trip(PoolingVAE(0.0), patches)
    assert (grey == 128).all()  # a latent of zeros decodes to mid grey: the colour is gone


def test_latent_colour_probe_tells_kept_from_lost_colour(probe):
    kept_centre, kept_whole, std = probe.latent_colour_probe(PoolingVAE(1.0), count=80, size=16)
    lost_centre, lost_whole, std_again = probe.latent_colour_probe(PoolingVAE(0.0), count=80, size=16)
    assert std == std_again and std > 50  # uniform random 8-bit colours: std ~ 74
    assert kept_centre < 1.0 and kept_whole < 1.0
    assert lost_centre > 0.8 * std and lost_whole > 0.8 * std
