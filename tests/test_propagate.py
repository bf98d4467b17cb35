"""Propagation (paper §3.5): synthetic clips with a known answer, and each algorithm piece against a naive oracle.

The oracles below are plain loops over pixels on purpose: slow, obvious, and the truth the tensor code must match.
"""

from __future__ import annotations

import itertools
import logging
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fresco_v2v.errors import Cancelled, ConfigError
from fresco_v2v.flow import compose_flows
from fresco_v2v.patchmatch import (
    all_patches,
    build_source_pyramid,
    gather_patches,
    guided_synthesis,
    patch_distance,
    patchmatch,
    vote,
)
from fresco_v2v.propagate import (
    PropagationConfig,
    apply_colour_lookup,
    apply_residual,
    box_mean,
    clamp_to_candidate_range,
    colour_levels,
    colour_model_error,
    detail_energy,
    estimate_propagation_flows,
    fine_detail,
    histogram_preserving_blend,
    image_gradients,
    key_segments,
    local_colour_lookup,
    lookup_self_error,
    neighbour_range,
    propagate,
    residual_coefficients,
    restore_detail,
    sample_channels,
    screened_poisson,
)
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip, textured_image

# ------------------------------------------------------------------------------------------------ helpers


def colour_map(frames: np.ndarray) -> np.ndarray:
    """The "translation" of the tests: a fixed nonlinear tone curve per channel, then a channel rotation."""
    x = np.arange(256) / 255.0
    lut = np.stack([x**0.6, 1 - (1 - x) ** 2, 0.2 + 0.6 * x], -1)  # [256, 3]
    lut = (lut * 255).round().astype(np.uint8)
    out = np.stack([lut[frames[..., c], c] for c in range(3)], -1)
    return np.ascontiguousarray(out[..., [2, 0, 1]])


def mean_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)
    return float(d[mask].mean() if mask is not None else d.mean())


def run(frames: np.ndarray, keys: list[int], **cfg) -> tuple[list[np.ndarray], np.ndarray]:
    truth = colour_map(frames)
    out = propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(**cfg))
    return out, truth


# ------------------------------------------------------------------------------------------------ end to end


def test_moving_square_matches_colour_mapped_truth_including_uncovered_band():
    # 64x80 scene, a 20 px textured square moving 2 px right and 1 px down per frame; keys every 6 frames
    frames = moving_square_clip(13, 64, 80, 20, (10, 12), (2, 1), seed=3)
    keys = [0, 6, 12]
    out, truth = run(frames, keys)
    assert len(out) == len(frames)
    for k in keys:
        np.testing.assert_array_equal(out[k], truth[k])  # keys come back unchanged
    for t in (2, 3, 4, 8, 9, 10):
        err = mean_abs(out[t], truth[t])
        assert err < 4.0, (t, err)
        # the band uncovered by the motion since the left key: square there at key L, background now
        x0, y0 = 10 + 2 * (t // 6 * 6), 12 + 1 * (t // 6 * 6)
        was = np.zeros(frames.shape[1:3], bool)
        was[y0 : y0 + 20, x0 : x0 + 20] = True
        now = np.zeros_like(was)
        now[12 + t : 12 + t + 20, 10 + 2 * t : 10 + 2 * t + 20] = True
        band = was & ~now
        assert band.sum() > 20
        assert mean_abs(out[t], truth[t], band) < 8.0, (t, mean_abs(out[t], truth[t], band))
    # far better than copying the nearest key
    copy_err = np.mean([mean_abs(truth[min(keys, key=lambda k: abs(k - t))], truth[t]) for t in (2, 3, 4)])
    ours_err = np.mean([mean_abs(out[t], truth[t]) for t in (2, 3, 4)])
    assert ours_err < 0.3 * copy_err


def test_one_sided_segments_before_first_and_after_last_key():
    frames = shifted_texture_clip(9, 48, 56, (1, 1), seed=5)
    out, truth = run(frames, [4])
    for t in (0, 1, 2, 3, 5, 6, 7, 8):
        assert mean_abs(out[t], truth[t]) < 5.0, t
    np.testing.assert_array_equal(out[4], truth[4])


def test_adjacent_keys_have_nothing_to_do():
    frames = shifted_texture_clip(4, 32, 40, (1, 0), seed=1)
    truth = colour_map(frames)
    out = propagate(frames, [0, 1, 2, 3], list(truth))
    for a, b in zip(out, truth):
        np.testing.assert_array_equal(a, b)
    assert key_segments(6, [0, 1, 2, 5]) == [(2, 5, [3, 4])]
    assert key_segments(4, [1]) == [(None, 1, [0]), (1, None, [2, 3])]


@pytest.mark.parametrize("size", [(37, 53), (45, 31)])
def test_sizes_not_divisible_by_8(size):
    h, w = size
    frames = moving_square_clip(7, h, w, 11, (5, 6), (1, 1), seed=2)
    out, truth = run(frames, [0, 6])
    assert all(o.shape == (h, w, 3) and o.dtype == np.uint8 for o in out)
    assert np.mean([mean_abs(out[t], truth[t]) for t in range(1, 6)]) < 5.0


def test_every_option_runs_and_is_deterministic():
    frames = moving_square_clip(5, 40, 44, 12, (6, 8), (2, 1), seed=4)
    truth = colour_map(frames)
    cfg = PropagationConfig(poisson=True, warp_mode="bilinear", chained_flow=False, synthesis_threshold=0.01)
    a = propagate(frames, [0, 4], [truth[0], truth[4]], cfg, device="cpu")
    b = propagate(frames, [0, 4], [truth[0], truth[4]], cfg, device=torch.device("cpu"))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.mean([mean_abs(a[t], truth[t]) for t in (1, 2, 3)]) < 8.0
    off = PropagationConfig(
        residual_transfer=False, patch_synthesis=False, contrast_preserving=False, detail_range_radius=None
    )
    c = propagate(frames, [0, 4], [truth[0], truth[4]], off)
    assert np.mean([mean_abs(c[t], truth[t]) for t in (1, 2, 3)]) < 10.0
    clamped = PropagationConfig(
        anti_ringing=True, patch_iterations=2, patch_iterations_finest=3, colour_lookup=True, lookup_radius=1
    )
    d = propagate(frames, [0, 4], [truth[0], truth[4]], clamped)
    assert np.mean([mean_abs(d[t], truth[t]) for t in (1, 2, 3)]) < 8.0


def test_precomputed_flows_are_reused():
    frames = shifted_texture_clip(6, 32, 36, (1, 1), seed=7)
    truth = colour_map(frames)
    flows = estimate_propagation_flows(frames, [0, 5])
    assert sorted(flows) == [1, 2, 3, 4]
    assert len(flows[3].to_left) == 2 and len(flows[1].to_left) == 1  # direct + chained, chained == direct at 1
    a = propagate(frames, [0, 5], [truth[0], truth[5]], flows=flows)
    b = propagate(frames, [0, 5], [truth[0], truth[5]])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_output_does_not_depend_on_workers_and_threads_are_restored():
    # large motion so that patch synthesis (the random part) runs; two segments and a one-sided tail
    frames = shifted_texture_clip(9, 40, 48, (4, 2), seed=3)
    truth = colour_map(frames)
    keys = [0, 4, 7]
    before = torch.get_num_threads()
    one = propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(workers=1))
    assert torch.get_num_threads() == before
    three = propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(workers=3))
    assert torch.get_num_threads() == before
    for x, y in zip(one, three):
        np.testing.assert_array_equal(x, y)
    other_seed = propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(workers=3, seed=1))
    assert any((x != y).any() for x, y in zip(one, other_seed))  # the random search did run


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"warp_mode": "lanczos"}, "warp_mode"),
        ({"patch_size": 4}, "patch_size"),
        ({"error_scale": 0.0}, "error_scale"),
        ({"max_contrast_gain": 0.5}, "max_contrast_gain"),
        ({"key_sharpen": -1.0}, "key_sharpen"),
        ({"contrast_radius": -1}, "contrast_radius"),
        ({"poisson": "yes"}, "poisson"),
        ({"patch_iterations": 0}, "patch_iterations"),
        ({"patch_iterations_finest": 0}, "patch_iterations_finest"),
        ({"anti_ringing": 1}, "anti_ringing"),
        ({"detail_agreement": 0}, "detail_agreement"),
        ({"detail_range_radius": -1}, "detail_range_radius"),
        ({"detail_range_radius": 1.0}, "detail_range_radius"),
        ({"lookup_radius": -1}, "lookup_radius"),
        ({"lookup_radius": 0}, "lookup_radius"),
        ({"lookup_offset_penalty": float("inf")}, "lookup_offset_penalty"),
        ({"colour_lookup": 1}, "colour_lookup"),
        ({"colour_lookup": "on"}, "colour_lookup"),
        ({"lookup_offset_penalty": -0.1}, "lookup_offset_penalty"),
        ({"lookup_prior": -1}, "lookup_prior"),
        ({"colour_lookup": "yes"}, "colour_lookup"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
    ],
)
def test_config_is_validated(kwargs, field):
    with pytest.raises(ConfigError) as e:
        PropagationConfig(**kwargs)
    assert e.value.field == field


def test_inputs_are_validated():
    frames = shifted_texture_clip(4, 16, 16, (1, 0))
    keys = colour_map(frames)
    with pytest.raises(ConfigError, match="key_indices"):
        propagate(frames, [2, 1], [keys[2], keys[1]])
    with pytest.raises(ConfigError, match="key_indices"):
        propagate(frames, [0, 4], [keys[0], keys[3]])
    with pytest.raises(ConfigError, match="stylized_keys"):
        propagate(frames, [0, 3], [keys[0]])
    with pytest.raises(ConfigError, match=r"stylized_keys\[1\]"):
        propagate(frames, [0, 3], [keys[0], keys[3][:8]])
    with pytest.raises(ConfigError, match="frames"):
        propagate(frames.astype(np.float32), [0], [keys[0]])


# ------------------------------------------------------------------------------------------------ oracles


def naive_box_mean(x: np.ndarray, r: int) -> np.ndarray:
    h, w = x.shape
    out = np.zeros_like(x)
    for y, z in itertools.product(range(h), range(w)):
        out[y, z] = x[max(0, y - r) : y + r + 1, max(0, z - r) : z + r + 1].mean()
    return out


def test_box_mean_matches_naive_windows():
    x = np.random.default_rng(0).random((9, 7))
    for r in (0, 1, 3, 10):
        np.testing.assert_allclose(box_mean(torch.from_numpy(x), r).numpy(), naive_box_mean(x, r), atol=1e-10)


def naive_patch(img: np.ndarray, y: int, x: int, p: int) -> np.ndarray:
    """[C, P, P] patch around (y, x) with border pixels repeated."""
    c, h, w = img.shape
    r = p // 2
    out = np.zeros((c, p, p))
    for i, j in itertools.product(range(p), range(p)):
        out[:, i, j] = img[:, min(max(y + i - r, 0), h - 1), min(max(x + j - r, 0), w - 1)]
    return out


def test_patches_and_patch_distance_match_naive():
    rng = np.random.default_rng(1)
    tgt, src = rng.random((2, 7, 6)), rng.random((2, 5, 8))
    p = 3
    ap = all_patches(torch.from_numpy(src), p).numpy()
    for y, x in itertools.product(range(5), range(8)):
        np.testing.assert_allclose(ap[y * 8 + x], naive_patch(src, y, x, p).reshape(-1))
    pix = torch.tensor([[y, x] for y, x in itertools.product(range(7), range(6))])
    tp = gather_patches(torch.from_numpy(tgt), pix, p)
    nnf = torch.from_numpy(np.stack([rng.integers(0, 5, 42), rng.integers(0, 8, 42)], 1))
    d = patch_distance(tp, torch.from_numpy(ap), nnf, 8).numpy()
    for m, (y, x) in enumerate(pix.tolist()):
        ref = ((naive_patch(tgt, y, x, p) - naive_patch(src, *nnf[m].tolist(), p)) ** 2).sum()
        assert d[m] == pytest.approx(ref)


def brute_force_nnf_distance(tgt: np.ndarray, src: np.ndarray, p: int) -> np.ndarray:
    """Exhaustive nearest neighbour field: the smallest patch distance of every target pixel, [H*W]."""
    _, h, w = tgt.shape
    _, hs, ws = src.shape
    src_p = [naive_patch(src, y, x, p) for y, x in itertools.product(range(hs), range(ws))]
    best = []
    for y, x in itertools.product(range(h), range(w)):
        tp = naive_patch(tgt, y, x, p)
        best.append(min(((tp - s) ** 2).sum() for s in src_p))
    return np.array(best)


def test_patchmatch_finds_the_exhaustive_nearest_neighbours():
    src = torch.from_numpy(textured_image(14, 16, seed=2)).permute(2, 0, 1).double() / 255
    tgt = torch.roll(src, shifts=(3, -2), dims=(1, 2))  # every target patch exists in the source (cyclically)
    tgt[:, 5:8, 6:9] = src[:, 0:3, 0:3]  # a pasted block from elsewhere
    p = 3
    seed = torch.zeros(14 * 16, 2, dtype=torch.long)  # a useless seed: everything points at (0, 0)
    active = torch.arange(14 * 16)
    gen = torch.Generator().manual_seed(0)
    nnf = patchmatch(tgt, src, all_patches(src, p), seed, active, p, 10, 16, gen)
    got = patch_distance(gather_patches(tgt, torch.stack([active // 16, active % 16], 1), p), all_patches(src, p),
                         nnf, 16).numpy()  # fmt: skip
    ref = brute_force_nnf_distance(tgt.numpy(), src.numpy(), p)
    assert np.all(got >= ref - 1e-9)
    # PatchMatch is approximate: most matches exact (93% measured), total distance within 1% of the optimum
    assert np.mean(np.isclose(got, ref, atol=1e-9)) > 0.85
    assert got.sum() < 1.05 * ref.sum()


def naive_vote(values: np.ndarray, nnf: np.ndarray, h: int, w: int, p: int) -> np.ndarray:
    c, hs, ws = values.shape
    r = p // 2
    out = np.zeros((c, h * w))
    for y, x in itertools.product(range(h), range(w)):
        acc = np.zeros(c)
        for dy, dx in itertools.product(range(-r, r + 1), range(-r, r + 1)):
            qy, qx = min(max(y - dy, 0), h - 1), min(max(x - dx, 0), w - 1)
            sy, sx = nnf[qy * w + qx]
            sy, sx = min(max(sy + y - qy, 0), hs - 1), min(max(sx + x - qx, 0), ws - 1)
            acc += values[:, sy, sx]
        out[:, y * w + x] = acc / p**2
    return out


def test_vote_matches_naive():
    rng = np.random.default_rng(3)
    values = rng.random((4, 6, 7))
    h, w, p = 5, 9, 3
    nnf = np.stack([rng.integers(0, 6, h * w), rng.integers(0, 7, h * w)], 1)
    got = vote(torch.from_numpy(values), torch.from_numpy(nnf), (h, w), torch.arange(h * w), p).numpy()
    np.testing.assert_allclose(got, naive_vote(values, nnf, h, w, p))
    part = torch.tensor([0, 7, 44])
    np.testing.assert_allclose(vote(torch.from_numpy(values), torch.from_numpy(nnf), (h, w), part, p).numpy(),
                               naive_vote(values, nnf, h, w, p)[:, part.numpy()])  # fmt: skip


def test_guided_synthesis_recovers_shifted_content_from_a_wrong_seed():
    src = torch.from_numpy(textured_image(48, 64, seed=6)).permute(2, 0, 1).float() / 255
    tgt = torch.roll(src, shifts=5, dims=2)  # target(x) = source(x - 5)
    values = src.flip(0)  # the "stylized" key: colours swapped
    mask = torch.zeros(48, 64, dtype=torch.bool)
    mask[10:40, 15:50] = True
    pyr = build_source_pyramid(src, 5, 8)
    out, idx = guided_synthesis(tgt, pyr, values, torch.zeros(48, 64, 2), mask, 3, torch.Generator().manual_seed(0))
    want = torch.roll(values, shifts=5, dims=2).reshape(3, -1)[:, idx]
    assert (out - want).abs().mean() < 0.01


def naive_hpb(images: np.ndarray, weights: np.ndarray, r: int, gmax: float) -> np.ndarray:
    """Local histogram-preserving blend written out per pixel (see histogram_preserving_blend)."""
    k, c, h, w = images.shape
    wn = weights / weights.sum(0, keepdims=True)
    mix = (wn[:, None] * images).sum(0)
    luma, mluma = images.mean(1), mix.mean(0)
    out = np.zeros_like(mix)
    for y, x in itertools.product(range(h), range(w)):
        win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        target = sum(wn[i, y, x] * luma[i][win].var() for i in range(k))
        g = np.clip(np.sqrt((target + 1e-8) / (mluma[win].var() + 1e-8)), 1, gmax)
        for ch in range(c):
            mu = mix[ch][win].mean()
            out[ch, y, x] = mu + g * (mix[ch, y, x] - mu)
    return out


def test_histogram_preserving_blend_matches_naive_and_keeps_contrast():
    rng = np.random.default_rng(4)
    imgs, wts = rng.random((3, 3, 8, 9)), rng.random((3, 8, 9))
    got = histogram_preserving_blend(torch.from_numpy(imgs), torch.from_numpy(wts), 2, 1.5).numpy()
    np.testing.assert_allclose(got, naive_hpb(imgs, wts, 2, 1.5), atol=1e-6)
    # equal inputs: unchanged; independent noise at equal weights: variance kept (a plain mix halves it)
    same = np.repeat(imgs[:1], 2, 0)
    np.testing.assert_allclose(
        histogram_preserving_blend(torch.from_numpy(same), torch.ones(2, 8, 9, dtype=torch.float64), 2, 2).numpy(),
        imgs[0],
        atol=1e-6,
    )
    noise = torch.from_numpy(np.repeat(rng.normal(0.5, 0.1, (2, 1, 96, 96)), 3, 1))
    out = histogram_preserving_blend(noise, torch.ones(2, 96, 96, dtype=torch.float64), 7, 2.0)
    plain = noise.mean(0)
    assert plain.var().item() / noise[0].var().item() < 0.6
    assert 0.85 < out.var().item() / noise[0].var().item() < 1.1


def test_screened_poisson_matches_dense_solve():
    rng = np.random.default_rng(5)
    h, w, lam = 5, 6, 0.3
    base, gx, gy = rng.random((h, w)), rng.random((h, w)), rng.random((h, w))
    gx[:, -1] = 0
    gy[-1, :] = 0
    # D: forward differences inside the image, one row per edge
    rows, rhs_g = [], []
    for y, x in itertools.product(range(h), range(w)):
        for (dy, dx), g in (((0, 1), gx), ((1, 0), gy)):
            if y + dy < h and x + dx < w:
                r = np.zeros(h * w)
                r[(y + dy) * w + x + dx], r[y * w + x] = 1, -1
                rows.append(r)
                rhs_g.append(g[y, x])
    d = np.array(rows)
    a = d.T @ d + lam * np.eye(h * w)
    ref = np.linalg.solve(a, d.T @ np.array(rhs_g) + lam * base.reshape(-1)).reshape(h, w)
    got = screened_poisson(torch.from_numpy(base), torch.from_numpy(gx), torch.from_numpy(gy), lam).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9)
    # with the image's own gradients the solution is the image
    img = torch.from_numpy(rng.random((2, 7, 9)))
    np.testing.assert_allclose(screened_poisson(img, *image_gradients(img), 0.1).numpy(), img.numpy(), atol=1e-9)


def test_residual_coefficients_match_windowed_least_squares():
    rng = np.random.default_rng(6)
    src = rng.random((3, 6, 7))
    m = np.array([[0.5, -0.2, 0.1], [0.3, 1.2, 0.0], [-0.4, 0.2, 0.8]])
    sty = np.einsum("ij,ihw->jhw", m, src) + 0.01 * rng.random((3, 6, 7))
    r, eps = 1, 1e-4
    got = residual_coefficients(torch.from_numpy(src), torch.from_numpy(sty), r, eps, 10.0).numpy()
    for y, x in itertools.product(range(6), range(7)):
        win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        a = src[(slice(None), *win)].reshape(3, -1).T
        b = sty[(slice(None), *win)].reshape(3, -1).T
        a0, b0 = a - a.mean(0), b - b.mean(0)
        n = len(a)
        ref = np.linalg.solve(a0.T @ a0 / n + eps * np.eye(3), a0.T @ b0 / n)  # ridge regression, guided filter
        np.testing.assert_allclose(got[:, :, y, x], ref, atol=1e-8)
    diff = rng.random((3, 6, 7))
    np.testing.assert_allclose(
        apply_residual(torch.from_numpy(sty), torch.from_numpy(got), torch.from_numpy(diff)).numpy(),
        sty + np.einsum("ijhw,ihw->jhw", got, diff),
    )
    # exact linear colour maps are recovered in the interior
    sty_exact = np.einsum("ij,ihw->jhw", m, src)
    got = residual_coefficients(torch.from_numpy(src), torch.from_numpy(sty_exact), 2, 1e-9, 10.0).numpy()
    np.testing.assert_allclose(got[:, :, 3, 3], m, atol=1e-4)


def test_compose_flows_of_constant_shifts_adds_them():
    a = torch.zeros(10, 12, 2)
    a[..., 0] = 1.5
    b = torch.zeros(10, 12, 2)
    b[..., 1] = -2.0
    c = compose_flows(a[None], b[None])[0]  # the flow package's, which propagation chains with
    assert torch.allclose(c[..., 0], torch.tensor(1.5)) and torch.allclose(c[..., 1], torch.tensor(-2.0))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_sample_channels_equals_one_grid_sample_call(mode):
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(13, 9, 11, generator=gen)
    grid = torch.rand(1, 7, 8, 2, generator=gen) * 2.4 - 1.2  # some positions outside the image (border clamp)
    want = F.grid_sample(image[None], grid, mode=mode, padding_mode="border", align_corners=True)[0]
    assert torch.equal(sample_channels(image, grid, mode), want)


def test_neighbour_range_matches_naive_and_removes_bicubic_overshoot():
    gen = torch.Generator().manual_seed(3)
    h, w = 7, 9
    img = torch.rand(2, h, w, generator=gen)
    pos = torch.rand(1, 5, 6, 2, generator=gen) * torch.tensor([w + 1.0, h + 1.0]) - 1.0  # pixel x, y (some outside)
    grid = pos / torch.tensor([w - 1.0, h - 1.0]) * 2 - 1
    lo, hi = neighbour_range(img, grid)
    for i, j in itertools.product(range(5), range(6)):
        x, y = (float(v) for v in pos[0, i, j])
        x0, y0 = min(max(int(np.floor(x)), 0), w - 1), min(max(int(np.floor(y)), 0), h - 1)
        ys, xs = [y0, min(y0 + 1, h - 1)], [x0, min(x0 + 1, w - 1)]
        four = img[:, ys][:, :, xs].reshape(2, -1)
        assert torch.allclose(lo[:, i, j], four.amin(1)) and torch.allclose(hi[:, i, j], four.amax(1))
    # a hard step sampled 0.3 px off: bicubic overshoots, the clamped sample stays within the two levels
    step = torch.zeros(1, 8, 8)
    step[:, :, 4:] = 1.0
    base = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1)
    shifted = ((base + torch.tensor([0.3, 0.0])) / 7 * 2 - 1)[None]
    cubic = torch.nn.functional.grid_sample(step[None], shifted, mode="bicubic", align_corners=True)[0]
    assert cubic.min() < -0.01 or cubic.max() > 1.01
    clamped = torch.clamp(cubic, *neighbour_range(step, shifted))
    assert clamped.min() >= 0 and clamped.max() <= 1


def naive_fine_detail(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    k = np.array([1, 2, 1]) / 4
    out = np.zeros_like(x)
    for y, z in itertools.product(range(h), range(w)):
        acc = 0.0
        for i, j in itertools.product(range(3), range(3)):
            acc += k[i] * k[j] * x[min(max(y + i - 1, 0), h - 1), min(max(z + j - 1, 0), w - 1)]
        out[y, z] = x[y, z] - acc
    return out


def test_detail_restoration_matches_naive_and_undoes_resampling_blur():
    rng = np.random.default_rng(7)
    x = rng.random((2, 6, 8))
    band = np.stack([naive_fine_detail(c) for c in x])
    np.testing.assert_allclose(fine_detail(torch.from_numpy(x)).numpy(), band, atol=1e-12)
    target = rng.random((6, 8)) * 0.1
    band2 = np.stack([naive_fine_detail(c) for c in band])
    e, bc, cc = (naive_box_mean(v.mean(0), 1) for v in (band**2, band * band2, band2**2))
    d = np.clip((np.sqrt(np.maximum(bc**2 + cc * (target - e), 0)) - bc) / cc, 0, 1)  # solves E(d) = target
    got = restore_detail(torch.from_numpy(x), torch.from_numpy(target), 1, 2.0).numpy()
    np.testing.assert_allclose(got, x + d * band, atol=1e-10)
    # a half-pixel bilinear shift halves the finest band's energy or worse; restoring brings it back
    img = torch.from_numpy(textured_image(64, 64, seed=3)).permute(2, 0, 1).double() / 255
    shifted = (img + torch.roll(img, 1, dims=2)) / 2
    want = detail_energy(torch.roll(img, 1, dims=2), 3)
    assert detail_energy(shifted, 3).mean() < 0.7 * want.mean()
    fixed = restore_detail(shifted, want, 3, 4.0)
    assert 0.93 * want.mean() < detail_energy(fixed, 3).mean() < 1.07 * want.mean()


@pytest.mark.parametrize("radius", [0, 1, 2, 8])
def test_clamp_to_candidate_range_matches_naive_windows(radius):
    rng = np.random.default_rng(11)
    cands = rng.random((3, 2, 5, 7))
    image = rng.random((2, 5, 7)) * 1.6 - 0.3  # partly outside every candidate's range
    got = clamp_to_candidate_range(torch.from_numpy(image), torch.from_numpy(cands), radius).numpy()
    want = np.empty_like(image)
    for c in range(2):
        for y in range(5):
            for x in range(7):
                win = cands[:, c, max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1]
                want[c, y, x] = min(max(image[c, y, x], win.min()), win.max())
    np.testing.assert_array_equal(got, want)
    # an overshooting sharpened step comes back to the two levels the candidates hold
    step = torch.tensor([0.2, 0.2, 0.2, 0.8, 0.8, 0.8]).expand(1, 1, 6)
    sharpened = torch.tensor([0.2, 0.2, 0.05, 0.95, 0.8, 0.8]).expand(1, 1, 6)
    clamped = clamp_to_candidate_range(sharpened, step[None], radius)
    torch.testing.assert_close(clamped, step)


def naive_colour_lookup(target: np.ndarray, guide: np.ndarray, r: int, penalty: float, exclude_centre: bool):
    """Pixel by pixel, in 8-bit levels: the offset within the disc |o| <= r of least 8 * sum |level difference| + the
    offset's penalty rounded to 1/8 level (24 * 255 * penalty * |o|), border clamped; ties to the earlier offset."""
    _, h, w = target.shape
    lt, lg = np.round(target * 255).astype(int), np.round(guide * 255).astype(int)
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r]
    offsets = [o for o in offsets if not (exclude_centre and o == (0, 0))]
    offsets.sort(key=lambda o: o[0] ** 2 + o[1] ** 2)  # stable: ties keep the scan order, like the vectorized one
    flat = np.zeros((h, w), np.int64)
    dist = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            best = None
            for dy, dx in offsets:
                yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                c = 8 * np.abs(lt[:, y, x] - lg[:, yy, xx]).sum() + round(24 * 255 * penalty * np.hypot(dy, dx))
                if best is None or c < best[0]:
                    best = (c, yy * w + xx, np.abs(target[:, y, x] - guide[:, yy, xx]).mean())
            flat[y, x], dist[y, x] = best[1], best[2]
    return flat, dist


@pytest.mark.parametrize(
    "r,penalty,exclude",
    [(1, 0.0, False), (2, 0.01, False), (2, 0.0, True), (2, 0.005, False), (1, 5e4, False), (3, 0.002, False)],
)
def test_local_colour_lookup_matches_naive_search(r, penalty, exclude):
    g = torch.Generator().manual_seed(r)
    # frames are uint8: levels / 255 (a few distinct levels, so ties between offsets happen)
    target = torch.randint(0, 6, (3, 9, 11), generator=g).float() * 40 / 255
    guide = torch.randint(0, 6, (3, 9, 11), generator=g).float() * 40 / 255
    if exclude:
        target = guide
    carried = torch.rand(2, 9, 11, generator=g)
    picked, dist = local_colour_lookup(
        colour_levels(target), colour_levels(guide), carried, r, penalty, exclude_centre=exclude
    )
    want_flat, want_dist = naive_colour_lookup(target.double().numpy(), guide.double().numpy(), r, penalty, exclude)
    np.testing.assert_array_equal(picked.numpy(), carried.reshape(2, -1)[:, want_flat].numpy())
    np.testing.assert_allclose(dist.numpy(), want_dist, atol=1e-6)


def test_lookup_self_error_tells_colour_styles_from_others():
    # a source with runs of equal colours; a pointwise style of it is predicted exactly by a neighbour's colour
    src = np.repeat(np.repeat(textured_image(8, 10, seed=2), 2, 0), 2, 1)  # [16, 20, 3], 2x2 blocks
    truth = colour_map(src[None])[0]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, truth.shape, dtype=np.uint8)  # a style that does not follow colour at all
    cfg = PropagationConfig(colour_lookup=True)

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1).float() / 255

    assert lookup_self_error(t(src), t(truth), cfg).abs().max() < 1e-6
    assert lookup_self_error(t(src), t(noise), cfg).mean() > 0.2


def posterize(frames: np.ndarray) -> np.ndarray:
    """A flat-colour style: 4 levels per channel, then a channel rotation."""
    return np.ascontiguousarray(((frames // 64) * 64 + 32)[..., [1, 2, 0]]).astype(np.uint8)


def noisy_clip(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A smooth texture (bilinear x3 upsampling) moving 1 px per frame, with fresh sensor noise (+-2 levels) in every
    frame: a posterized style of it flickers at band edges frame by frame, which no warp of a key predicts and a
    lookup of frame t's own colour does."""
    big = textured_image((h + n) // 3 + 2, (w + n) // 3 + 2, seed)
    big = cv2.resize(big, (big.shape[1] * 3, big.shape[0] * 3), interpolation=cv2.INTER_LINEAR)
    frames = np.stack([big[:h, t : t + w] for t in range(n)]).astype(np.int16)
    return np.clip(frames + np.random.default_rng(seed).integers(-2, 3, frames.shape), 0, 255).astype(np.uint8)


def test_colour_lookup_follows_a_posterized_style_through_noise():
    # Measured: mean error 1.60 with the lookup, 2.07 without.
    frames = noisy_clip(9, 40, 48, seed=6)
    truth = posterize(frames)
    keys = [0, 8]
    err = {}
    for on in (False, True):
        out = propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(colour_lookup=on))
        err[on] = np.mean([mean_abs(out[t], truth[t]) for t in range(1, 8)])
    assert err[True] < 0.85 * err[False], err


def test_colour_lookup_auto_is_on_for_flat_colour_keys_only(caplog):
    # Measured: the posterized keys' colours predict their style 5.7x better than the linear model, the colour map's
    # (a smooth tone curve, which the linear model follows) 1.0-1.1x.
    frames = noisy_clip(9, 40, 48, seed=6)
    keys = [0, 8]
    for style, on in ((posterize, True), (colour_map, False)):
        truth = style(frames)
        with caplog.at_level(logging.INFO, logger="fresco_v2v.propagate"):
            caplog.clear()
            propagate(frames, keys, [truth[k] for k in keys], PropagationConfig(colour_lookup="auto"))
        said = [r.getMessage() for r in caplog.records if "colour lookup" in r.getMessage()]
        assert len(said) == 2 and all(f"colour lookup {'on' if on else 'off'}" in m for m in said), said


def naive_colour_model_error(src: np.ndarray, sty: np.ndarray, coeffs: np.ndarray, r: int, er: int) -> np.ndarray:
    """Pixel by pixel: the guided filter's output with the given A (b per window), then the box-mean error."""
    _, h, w = src.shape

    def window(y, x, rad):
        return slice(max(y - rad, 0), min(y + rad + 1, h)), slice(max(x - rad, 0), min(x + rad + 1, w))

    b = np.zeros((3, h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = window(y, x, r)
            mean_i = src[:, ys, xs].mean((1, 2))
            mean_s = sty[:, ys, xs].mean((1, 2))
            b[:, y, x] = mean_s - coeffs[:, :, y, x].T @ mean_i
    pred = np.zeros((3, h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = window(y, x, r)
            a = coeffs[:, :, ys, xs].mean((2, 3))  # [3 in, 3 out]
            pred[:, y, x] = a.T @ src[:, y, x] + b[:, ys, xs].mean((1, 2))
    e = np.abs(pred - sty).mean(0)
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = window(y, x, er)
            out[y, x] = e[ys, xs].mean()
    return out


def test_colour_model_error_matches_naive_guided_filter():
    g = torch.Generator().manual_seed(4)
    src = torch.rand(3, 7, 9, generator=g, dtype=torch.float64)
    sty = torch.rand(3, 7, 9, generator=g, dtype=torch.float64)
    cfg = PropagationConfig(residual_radius=2, error_radius=1)
    coeffs = residual_coefficients(src, sty, 2, 1e-3, 1.0)
    got = colour_model_error(src, sty, coeffs, cfg)
    want = naive_colour_model_error(src.numpy(), sty.numpy(), coeffs.numpy(), 2, 1)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9)
    # a style that is a linear function of the source has no error
    linear = 0.3 + 0.5 * src.flip(0)
    assert colour_model_error(src, linear, residual_coefficients(src, linear, 2, 1e-9, 1.0), cfg).max() < 1e-6


def test_apply_colour_lookup_takes_the_better_side_by_its_trust():
    g = torch.Generator().manual_seed(5)
    h, w = 6, 7
    blend = torch.rand(3, h, w, generator=g)
    styles = torch.rand(2, 3, h, w, generator=g)
    errors = torch.rand(2, h, w, generator=g) * 0.08
    temporal = torch.tensor([0.7, 0.3])
    cfg = PropagationConfig()
    got = apply_colour_lookup(blend, styles, errors, temporal, cfg)
    for y, x in itertools.product(range(h), range(w)):  # pixel by pixel
        weights = [temporal[s] * np.exp(-((errors[s, y, x].item() / cfg.error_scale) ** 2)) for s in range(2)]
        s = int(weights[1] > weights[0])
        trust = np.exp(-((errors[s, y, x].item() / cfg.error_scale) ** 2))
        u = min(max((trust - 0.25) / 0.5, 0.0), 1.0)
        want = (1 - u) * blend[:, y, x] + u * styles[s, :, y, x]
        torch.testing.assert_close(got[:, y, x], want.float(), atol=1e-6, rtol=0)
    one = apply_colour_lookup(blend, styles[:1], torch.zeros(1, h, w), temporal[:1], cfg)  # one side, trusted fully
    torch.testing.assert_close(one, styles[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_propagate_stops_when_asked(workers, monkeypatch):
    propagate_module = sys.modules["fresco_v2v.propagate.segments"]  # where propagate looks synthesize_frame up

    frames = shifted_texture_clip(12, 24, 32, (1, 0), seed=2)
    keys = [0, 5, 11]
    cfg = PropagationConfig(workers=workers)
    never = propagate(frames, keys, [frames[k] for k in keys], cfg, should_stop=lambda: False)
    plain = propagate(frames, keys, [frames[k] for k in keys], cfg)
    assert all(np.array_equal(a, b) for a, b in zip(never, plain))  # asking changes nothing
    asked = []

    def stop_on_third_question():
        asked.append(1)
        return len(asked) >= 3

    rendered = []
    real = propagate_module.synthesize_frame

    def counting(*a, **k):
        rendered.append(1)
        return real(*a, **k)

    monkeypatch.setattr(propagate_module, "synthesize_frame", counting)
    with pytest.raises(Cancelled, match=r"propagation stopped \(of 9 frames to render\)"):
        propagate(frames, keys, [frames[k] for k in keys], cfg, should_stop=stop_on_third_question)
    assert len(rendered) < 9  # the frames after the Stop were not rendered


@pytest.mark.parametrize("workers", [1, 2])
def test_iter_propagate_streams_from_a_frame_source(tmp_path, workers, monkeypatch):
    """From a FrameReader (frames decoded on demand) and keys read lazily, iter_propagate yields exactly what
    propagate returns for the decoded array, in order, and yields the first frames before the last segment is
    rendered: at most two segments are held."""
    from fresco_v2v.propagate import iter_propagate
    from fresco_v2v.run_files import KeyImages, write_png
    from fresco_v2v.testing import write_test_video
    from fresco_v2v.video import FrameReader, read_video, scan_video

    src = write_test_video(tmp_path / "in.mp4", shifted_texture_clip(16, 64, 64, (1, 0), seed=3), 24, gop=4)
    frames = read_video(src, short_side=64).frames
    keys = [0, 5, 10, 15]
    paths = []
    for k in keys:
        paths.append(tmp_path / f"{k:04d}.png")
        write_png(paths[-1], 255 - frames[k])
    cfg = PropagationConfig(workers=workers)
    want = propagate(frames, keys, [255 - frames[k] for k in keys], cfg)
    segments = sys.modules["fresco_v2v.propagate.segments"]
    rendered = []
    real = segments.synthesize_frame

    def counting(*a, **k):
        rendered.append(1)
        return real(*a, **k)

    monkeypatch.setattr(segments, "synthesize_frame", counting)
    with FrameReader(scan_video(src, short_side=64), cache=4) as reader:
        stream = iter_propagate(reader, keys, KeyImages(paths), cfg)
        first = next(stream)
        rendered_before_first = len(rendered)
        got = [first, *stream]
    assert len(got) == len(want) == 16
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert rendered_before_first <= 8 < len(rendered) == 12  # two segments of 4 frames, of three
