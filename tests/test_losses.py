"""Eq. 5 and eq. 6 against direct small-tensor formulas."""

import pytest
import torch

from fresco_v2v.losses import (
    adaptive_instance_normalization,
    gram_distance,
    gram_distance_l1,
    normalize_tokens,
    spatial_consistency_loss,
    temporal_consistency_loss,
)


def direct_grams(f):
    t = f.flatten(2).transpose(1, 2)
    t = t / t.norm(dim=-1, keepdim=True)
    return t @ t.transpose(1, 2)  # [N, L, L]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_trick_equals_direct_frobenius(dtype):
    g = torch.Generator().manual_seed(0)
    a = normalize_tokens(torch.randn(3, 5, 6, 7, generator=g, dtype=dtype))
    b = normalize_tokens(torch.randn(3, 5, 6, 7, generator=g, dtype=dtype))
    direct = (a @ a.transpose(1, 2) - b @ b.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(gram_distance(a, b), direct, rtol=tol, atol=tol)


def test_gram_l1_chunks_equal_direct():
    g = torch.Generator().manual_seed(1)
    a = normalize_tokens(torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64))
    b = normalize_tokens(torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64))
    direct = (a @ a.transpose(1, 2) - b @ b.transpose(1, 2)).abs().sum(dim=(1, 2))
    torch.testing.assert_close(gram_distance_l1(a, b, chunk=7), direct)


@pytest.mark.parametrize("norm", ["fro", "l1"])
def test_spatial_loss_is_mean_of_gram_difference(norm):
    g = torch.Generator().manual_seed(2)
    f = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    r = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    d = direct_grams(f) - direct_grams(r)
    expect = (d.pow(2) if norm == "fro" else d.abs()).mean()
    torch.testing.assert_close(spatial_consistency_loss(f, r, norm), expect)
    assert spatial_consistency_loss(r, r, norm) < 1e-12
    with pytest.raises(ValueError, match="norm"):
        spatial_consistency_loss(f, r, "l2")


def test_spatial_loss_is_differentiable():
    f = torch.randn(2, 3, 4, 4, requires_grad=True)
    spatial_consistency_loss(f, torch.randn(2, 3, 4, 4)).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_temporal_loss_direct_loop():
    g = torch.Generator().manual_seed(3)
    n, c, h, w = 3, 2, 4, 5
    f = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    flow = torch.zeros(n - 1, h, w, 2, dtype=torch.float64)
    flow[..., 0] = -1.0  # frame i+1 at x came from frame i at x-1
    vis = torch.rand(n - 1, h, w, generator=g) > 0.3
    total = 0.0
    for i in range(n - 1):
        for y in range(h):
            for x in range(w):
                src = f[i, :, y, max(x - 1, 0)]  # border clamp
                total += float(vis[i, y, x]) * (f[i + 1, :, y, x] - src).abs().sum().item()
    expect = total / ((n - 1) * c * h * w)
    assert temporal_consistency_loss(f, flow, vis).item() == pytest.approx(expect)


def test_temporal_loss_zero_for_consistent_motion_and_symmetric_option():
    base = torch.randn(1, 2, 6, 9, dtype=torch.float64)
    f = torch.cat([base, torch.roll(base, 1, dims=3)])  # frame 1 = frame 0 moved right by 1
    flow_b = torch.zeros(1, 6, 9, 2, dtype=torch.float64)
    flow_b[..., 0] = -1
    flow_f = -flow_b
    vis = torch.ones(1, 6, 9, dtype=torch.bool)
    vis[..., 0] = False  # wrapped column
    vis_f = torch.ones(1, 6, 9, dtype=torch.bool)
    vis_f[..., -1] = False
    assert temporal_consistency_loss(f, flow_b, vis).item() < 1e-12
    assert temporal_consistency_loss(f, flow_b, vis, flow_f, vis_f).item() < 1e-12
    assert temporal_consistency_loss(f[:1], flow_b[:0], vis[:0]).item() == 0


def test_adain_matches_reference_statistics():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 5, 5, generator=g) * 3 + 1
    r = torch.randn(2, 3, 5, 5, generator=g) * 0.5 - 2
    y = adaptive_instance_normalization(x, r)
    torch.testing.assert_close(y.mean(dim=(2, 3)), r.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(2, 3), correction=0), r.std(dim=(2, 3), correction=0), atol=1e-4, rtol=1e-4)
    one = adaptive_instance_normalization(torch.randn(2, 3, 1, 1), torch.randn(2, 3, 1, 1))
    assert torch.isfinite(one).all()


# L <= 2C (direct Grams, analytic gradient) and L > 2C (C x C identity, analytic gradient)
@pytest.mark.parametrize("shape", [(2, 8, 2, 2), (2, 3, 2, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("norm", ["fro", "l1"])
def test_spatial_loss_fn_equals_direct(shape, norm):
    from fresco_v2v.losses import spatial_loss_fn

    g = torch.Generator().manual_seed(5)
    f, r = torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)
    x = f.clone().requires_grad_(True)
    d = direct_grams(x) - direct_grams(r)
    expect = (d.pow(2) if norm == "fro" else d.abs()).mean()
    (want,) = torch.autograd.grad(expect, x)
    y = f.clone().requires_grad_(True)
    got = spatial_loss_fn(r, norm)(y)
    torch.testing.assert_close(got, expect.detach())
    (grad,) = torch.autograd.grad(got, y)
    torch.testing.assert_close(grad, want)  # the analytic gradients against autograd on the naive Grams
    with pytest.raises(ValueError, match="norm"):
        spatial_loss_fn(r, "l2")


@pytest.mark.parametrize("groups,n,bidirectional", [(2, 4, False), (2, 5, True), (1, 3, True), (1, 1, False)])
def test_temporal_loss_fn_equals_the_loss_per_group(groups, n, bidirectional):
    """The sparse-warp eq. 5 (values and gradients) against the grid-sampled one, averaged over the groups."""
    from fresco_v2v.losses import temporal_loss_fn

    g = torch.Generator().manual_seed(9)
    c, h, w = 3, 5, 6
    flow_b, flow_f = (torch.randn(n - 1, h, w, 2, generator=g) * 2 for _ in range(2))
    vis_b, vis_f = (torch.rand(n - 1, h, w, generator=g) > 0.3 for _ in range(2))
    extra = (flow_f, vis_f) if bidirectional else (None, None)
    f = torch.randn(groups * n, c, h, w, generator=g)
    fast = f.clone().to(memory_format=torch.channels_last).requires_grad_(True)
    slow = f.clone().requires_grad_(True)
    got = temporal_loss_fn(groups, flow_b, vis_b, *extra)(fast)
    per_group = slow.view(groups, n, c, h, w)
    want = sum(temporal_consistency_loss(per_group[i], flow_b, vis_b, *extra) for i in range(groups)) / groups
    torch.testing.assert_close(got, want)
    if n > 1:
        got.backward()
        want.backward()
        torch.testing.assert_close(fast.grad, slow.grad)


def test_warp_matrix_is_the_warp():
    from fresco_v2v.flow import warp
    from fresco_v2v.losses import warp_matrix

    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, 7, generator=g)  # 3 frames
    flow = torch.randn(2, 5, 7, 2, generator=g) * 3  # beyond the border too: clamped like warp
    m = warp_matrix(flow, torch.tensor([2, 0]), torch.tensor([1, 2]), 3)  # frame 2 reads frame 1, 0 reads 2
    tokens = x.permute(0, 2, 3, 1).reshape(-1, 4)
    out = (m @ tokens).view(3, 5, 7, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(out[2], warp(x[1:2], flow[:1])[0])
    torch.testing.assert_close(out[0], warp(x[2:3], flow[1:])[0])
    assert out[1].abs().max() == 0  # no pair lands on frame 1


def test_l1_spatial_loss_in_chunks_without_the_reference_gram(monkeypatch):
    """The memory-bounded L1 path (b bᵀ not kept, 2-row chunks) gives the same loss and gradient."""
    from fresco_v2v import losses

    g = torch.Generator().manual_seed(6)
    f, r = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, 3, 3, generator=g)
    r = r.double()
    x, y = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    want = losses.spatial_loss_fn(r, "l1")(x)
    monkeypatch.setattr(losses, "L1_GRAM_ELEMENTS", 0)
    monkeypatch.setattr(losses, "L1_CHUNK_ELEMENTS", 2 * 2 * 9)  # [N=2, chunk=2, L=9]
    got = losses.spatial_loss_fn(r, "l1")(y)
    torch.testing.assert_close(got, want)
    want.backward()
    got.backward()
    torch.testing.assert_close(y.grad, x.grad)


def test_temporal_loss_fn_falls_back_to_grid_sampling(monkeypatch):
    """On a device without sparse products eq. 5 is the grid-sampled loss, with the same value."""
    from fresco_v2v import losses

    g = torch.Generator().manual_seed(4)
    flow, vis = torch.randn(2, 4, 5, 2, generator=g), torch.rand(2, 4, 5, generator=g) > 0.2
    f = torch.randn(6, 3, 4, 5, generator=g)
    fast = losses.temporal_loss_fn(2, flow, vis, flow, vis)(f)
    monkeypatch.setattr(losses, "sparse_products_work", lambda device_type: False)
    torch.testing.assert_close(losses.temporal_loss_fn(2, flow, vis, flow, vis)(f), fast)
