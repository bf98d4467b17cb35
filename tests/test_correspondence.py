"""The FRESCO correspondence against the naive per-pixel oracle, and the properties attention relies on."""

import numpy as np
import pytest
import torch
from oracles import naive_scale

from fresco_v2v import ConfigError
from fresco_v2v.correspondence import (
    Correspondence,
    build_correspondence,
    resolve_collisions,
    unique_region,
)
from fresco_v2v.flow import BidirectionalFlow, sequence_flows
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip, textured_image


def random_flows(n, h, w, seed, occ_rate=0.05):
    """Random flows with block structure (so many tokens collide) and random occlusion."""
    rng = np.random.default_rng(seed)

    def field():
        coarse = rng.normal(size=(n - 1, h // 8 + 1, w // 8 + 1, 2)) * 10
        return np.repeat(np.repeat(coarse, 8, 1), 8, 2)[:, :h, :w] + rng.normal(size=(n - 1, h, w, 2))

    def occ():  # scattered pixels and whole 6x6 blocks (not aligned to tokens), so every token rule matters
        blocks = np.repeat(np.repeat(rng.random((n - 1, h // 6 + 1, w // 6 + 1)) < 0.15, 6, 1), 6, 2)[:, :h, :w]
        return blocks | (rng.random((n - 1, h, w)) < occ_rate)

    return BidirectionalFlow(
        *(torch.from_numpy(a.astype(np.float32)) for a in (field(), field())),
        torch.from_numpy(occ()),
        torch.from_numpy(occ()),
    )


def random_frames(n, h, w, seed):
    # few colours, so colour ties between colliding tokens happen and the tie rule is exercised
    return (np.random.default_rng(seed).integers(0, 4, (n, h, w, 3)) * 60).astype(np.uint8)


def assert_matches_oracle(corr: Correspondence, frames, flows):
    attention_rule, loss_rule = corr.token_occlusion
    for f, sc in corr.scales.items():
        occ = (flows.occ_fwd.numpy(), flows.occ_bwd.numpy())
        ref = naive_scale(frames, flows.fwd.numpy(), flows.bwd.numpy(), *occ, f, attention_rule, loss_rule)
        np.testing.assert_allclose(sc.flow_fwd.numpy(), ref["flow_fwd"], atol=1e-5)
        np.testing.assert_allclose(sc.flow_bwd.numpy(), ref["flow_bwd"], atol=1e-5)
        keys = ("occ_fwd", "occ_bwd", "attn_occ_bwd", "unique_index", "traj_perm", "traj_inverse", "traj_segment")
        for key in keys:
            np.testing.assert_array_equal(getattr(sc, key).numpy(), ref[key], err_msg=f"{key} at factor {f}")


@pytest.mark.parametrize("rules", [("area", "any"), ("any", "any"), ("centre", "area")])
@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_oracle_on_random_flows(seed, rules):
    n, h, w = 5, 32, 48
    frames, flows = random_frames(n, h, w, seed), random_flows(n, h, w, seed)
    corr = build_correspondence(
        frames, flows, factors=(4, 8, 16), attention_occlusion=rules[0], loss_occlusion=rules[1]
    )
    assert corr.token_occlusion == rules
    assert_matches_oracle(corr, frames, flows)
    # the random flows must actually produce collisions and broken links, or the test proves little
    seg = corr[4].traj_segment
    assert (seg[-1] > 0).float().mean() > 0.3


def test_matches_naive_oracle_on_real_flow():
    frames = moving_square_clip(4, 64, 96, 24, (16, 16), (5, 3))
    corr = build_correspondence(frames, factors=(8, 16))
    assert_matches_oracle(corr, frames, corr.flows)


def test_trajectories_are_permutations_and_gather_round_trips():
    frames, flows = random_frames(4, 32, 32, 1), random_flows(4, 32, 32, 1)
    sc = build_correspondence(frames, flows, factors=(4,))[4]
    n, l = sc.num_frames, sc.num_tokens
    ar = torch.arange(l)
    for j in range(n):
        assert torch.equal(torch.sort(sc.traj_perm[j]).values, ar)
        assert torch.equal(sc.traj_perm[j, sc.traj_inverse[j]], ar)
    x = torch.randn(n * l, 5)
    g = x[sc.trajectory_gather_index()].view(l, n, 5)
    for j in (0, n - 1):  # trajectory order: row p holds token perm[j, p] of frame j
        torch.testing.assert_close(g[:, j], x.view(n, l, 5)[j, sc.traj_perm[j]])
    back = g.reshape(l * n, 5)[sc.trajectory_scatter_index()]
    torch.testing.assert_close(back, x)
    m = sc.trajectory_mask()
    assert m.shape == (l, n, n) and m.diagonal(dim1=1, dim2=2).all() and torch.equal(m, m.transpose(1, 2))


def test_shift_by_one_token_per_frame_is_tracked():
    # 8 px per frame at factor 8 = one token to the right per frame.
    frames = shifted_texture_clip(4, 64, 96, (8, 0))
    sc = build_correspondence(frames, factors=(8,))[8]
    h, w = sc.size
    tok, linked = sc.track(0, 3)
    q = torch.arange(h * w)
    y, x = q // w, q % w
    interior = (x >= 1) & (x <= w - 5) & (y >= 1) & (y <= h - 2)
    assert linked[interior].all()
    assert torch.equal(tok[interior], (y * w + x + 3)[interior])
    # tokens entering at the left edge of frame 1 have no past in frame 0: they are in the unique region
    assert torch.isin(torch.arange(1, h - 1) * w + h * w, sc.unique_index).all()
    back, ok = sc.track(3, 0)  # and the way back agrees
    assert torch.equal(back[tok[interior]], q[interior]) and ok[tok[interior]].all()


def test_static_clip_has_unbroken_trajectories_and_minimal_unique_region():
    frames = np.repeat(textured_image(64, 64, 2)[None], 3, axis=0)
    corr = build_correspondence(frames, factors=(8, 16))
    for sc in corr.scales.values():
        assert torch.equal(sc.unique_index, torch.arange(sc.num_tokens))  # frame 0 only
        assert (sc.traj_segment == 0).all()
        assert torch.equal(sc.traj_perm, torch.arange(sc.num_tokens).expand(3, -1))


def test_unique_region_definition():
    occ = torch.zeros(2, 2, 3, dtype=torch.bool)
    occ[0, 1, 2] = True  # token 5 of frame 1
    occ[1, 0, 0] = True  # token 0 of frame 2
    assert unique_region(occ).tolist() == [0, 1, 2, 3, 4, 5, 6 + 5, 12 + 0]


def test_collision_goes_to_closest_colour_then_lowest_index():
    match = torch.tensor([2, 2, 2, -1, 0])
    cost = torch.tensor([5.0, 1.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    assert resolve_collisions(match, cost).tolist() == [False, True, False, False, True]


def test_occlusion_pooling_marks_touching_tokens():
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    z = torch.zeros(1, 16, 16, 2)
    occ = torch.zeros(1, 16, 16, dtype=torch.bool)
    occ[0, 9, 3] = True  # one pixel in token (1, 0) at factor 8
    corr = build_correspondence(frames, BidirectionalFlow(z, z.clone(), occ, occ.clone()), factors=(8,))
    assert corr[8].occ_bwd[0].tolist() == [[False, False], [True, False]]
    assert corr[8].visible_mask()[0].tolist() == [[True, True], [False, True]]


def test_flow_scaled_with_size():
    frames = shifted_texture_clip(2, 64, 64, (4, -2))
    corr = build_correspondence(frames, factors=(8, 16))
    inner = corr[8].flow_bwd[0, 2:-2, 2:-2]
    torch.testing.assert_close(inner.mean((0, 1)), torch.tensor([-0.5, 0.25]), atol=0.03, rtol=0)
    torch.testing.assert_close(
        corr[16].flow_bwd[0, 1:-1, 1:-1].mean((0, 1)), torch.tensor([-0.25, 0.125]), atol=0.03, rtol=0
    )


def test_lookup_device_and_validation():
    frames = shifted_texture_clip(3, 64, 128, (2, 0))
    corr = build_correspondence(frames, factors=(16, 8))
    assert corr.num_frames == 3 and corr.for_tokens(8 * 16) is corr[8] and corr.for_tokens(32) is corr[16]
    with pytest.raises(KeyError):
        corr.for_tokens(7)
    with pytest.raises(KeyError, match="factor 64"):
        corr[64]
    moved = corr.to("cpu")
    assert torch.equal(moved[8].traj_perm, corr[8].traj_perm)
    with pytest.raises(ConfigError, match="factors"):
        build_correspondence(frames, factors=(48,))
    with pytest.raises(ConfigError, match="frames"):
        build_correspondence(frames.astype(np.float32))
    with pytest.raises(ConfigError, match="flows"):
        build_correspondence(frames, sequence_flows(frames[:2]), factors=(8,))


def test_single_frame_batch():
    frames = shifted_texture_clip(1, 64, 64, (0, 0))
    sc = build_correspondence(frames, factors=(8,))[8]
    assert sc.traj_perm.shape == (1, 64) and torch.equal(sc.unique_index, torch.arange(64))
