"""Eq. 7, 8, 9 against direct small-tensor formulas; the processor against diffusers' standard attention."""

import math

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from test_correspondence import random_flows, random_frames

from fresco_v2v.attention import (
    FrescoAttentionContext,
    StepConstraints,
    chunked_attention,
    efficient_cross_frame_attention,
    fresco_attention,
    guided_layer_names,
    spatial_guided_attention,
    temporal_guided_attention,
)
from fresco_v2v.config import AttentionConfig
from fresco_v2v.correspondence import build_correspondence
from fresco_v2v.testing import make_tiny_pipeline, make_tiny_xl_pipeline


def softmax_attn(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_chunked_equals_unchunked():
    q, k, v = rand(2, 3, 50, 4, seed=1), rand(2, 3, 40, 4, seed=2), rand(2, 3, 40, 4, seed=3)
    torch.testing.assert_close(chunked_attention(q, k, v, max_elements=2 * 3 * 40 * 7), softmax_attn(q, k, v, 0.5))


def test_eq7_spatial_guided():
    q, qr, kr = rand(4, 2, 9, 6, seed=1), rand(4, 2, 9, 6, seed=2), rand(4, 2, 9, 6, seed=3)
    expect = torch.softmax(qr @ kr.transpose(-1, -2) / (5.0 * math.sqrt(6)), dim=-1) @ q
    torch.testing.assert_close(spatial_guided_attention(q, qr, kr, 5.0), expect)


def test_eq8_efficient_cross_frame_naive():
    g, n, h, l, d = 2, 3, 2, 6, 4
    q, k, v = rand(g * n, h, l, d, seed=1), rand(g * n, h, l, d, seed=2), rand(g * n, h, l, d, seed=3)
    unique = torch.tensor([0, 1, 2, 3, 4, 5, 7, 8, 16])  # frame 0 + tokens 1, 2 of frame 1 + token 4 of frame 2
    out = efficient_cross_frame_attention(q, k, v, unique, n, max_elements=64)
    for gi in range(g):
        keys = torch.cat([k[gi * n + int(u) // l, :, int(u) % l][:, None] for u in unique], dim=1)  # [h, U, d]
        vals = torch.cat([v[gi * n + int(u) // l, :, int(u) % l][:, None] for u in unique], dim=1)
        for f in range(n):
            torch.testing.assert_close(out[gi * n + f], softmax_attn(q[gi * n + f], keys, vals, 1 / math.sqrt(d)))


def test_eq8_all_tokens_unique_is_full_cross_frame_attention():
    n, h, l, d = 3, 2, 5, 4
    q, k, v = rand(n, h, l, d, seed=4), rand(n, h, l, d, seed=5), rand(n, h, l, d, seed=6)
    out = efficient_cross_frame_attention(q, k, v, torch.arange(n * l), n)
    kk = k.permute(1, 0, 2, 3).reshape(h, n * l, d)
    vv = v.permute(1, 0, 2, 3).reshape(h, n * l, d)
    for f in range(n):
        torch.testing.assert_close(out[f], softmax_attn(q[f], kk, vv, 1 / math.sqrt(d)))


@pytest.mark.parametrize("seed", [0, 1])
def test_eq9_temporal_guided_naive(seed):
    n, hh, ww = 4, 32, 32
    sc = build_correspondence(random_frames(n, hh, ww, seed), random_flows(n, hh, ww, seed), factors=(8,))[8]
    g, h, d, l = 2, 2, 3, sc.num_tokens
    q, k, v = rand(g * n, h, l, d, seed=7), rand(g * n, h, l, d, seed=8), rand(g * n, h, l, d, seed=9)
    out = temporal_guided_attention(q, k, v, sc, 5.0)
    torch.testing.assert_close(out, eq9_oracle(q, k, v, sc, 5.0, n))


def eq9_oracle(q, k, v, sc, lambda_t, n):
    """Eq. 9 with loops: each token attends to the tokens linked to it on its trajectory (same segment)."""
    g, _, l, d = q.shape[0] // n, *q.shape[1:]
    out = torch.empty_like(v)
    for gi in range(g):
        for p in range(l):  # trajectory by trajectory
            toks = [int(sc.traj_perm[j, p]) for j in range(n)]
            seg = [int(sc.traj_segment[j, p]) for j in range(n)]
            for j in range(n):
                linked = [f for f in range(n) if seg[f] == seg[j]]
                qi = q[gi * n + j, :, toks[j]]  # [h, d]
                ks = torch.stack([k[gi * n + f, :, toks[f]] for f in linked], dim=1)  # [h, m, d]
                vs = torch.stack([v[gi * n + f, :, toks[f]] for f in linked], dim=1)
                w = torch.softmax((ks @ qi[..., None])[..., 0] / (lambda_t * math.sqrt(d)), dim=-1)  # [h, m]
                out[gi * n + j, :, toks[j]] = (w[..., None] * vs).sum(1)
    return out


def test_eq9_static_trajectories_use_no_mask():
    frames = np.repeat(random_frames(1, 16, 16, 0), 3, axis=0)
    sc = build_correspondence(frames, factors=(8,))[8]
    assert sc.trajectory_mask().all()
    n, h, l, d = 3, 1, 4, 2
    q, k, v = rand(n, h, l, d, seed=1), rand(n, h, l, d, seed=2), rand(n, h, l, d, seed=3)
    out = temporal_guided_attention(q, k, v, sc, 1.0)
    for tok in range(l):  # identity trajectories: each token attends over the frames at its own position
        for j in range(n):
            w = torch.softmax(torch.stack([(q[j, 0, tok] * k[f, 0, tok]).sum() for f in range(n)]) / math.sqrt(d), 0)
            torch.testing.assert_close(out[j, 0, tok], sum(w[f] * v[f, 0, tok] for f in range(n)))


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_pipeline(seed=0)


def unet_inputs(pipe, n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, size, size, generator=g)
    emb = torch.randn(n, 77, 32, generator=g)
    return x, emb


@pytest.mark.parametrize("make", [make_tiny_pipeline, make_tiny_xl_pipeline], ids=["tiny", "tiny-xl"])
def test_all_off_equals_standard_attention_and_leaves_no_trace(make):
    pipe = make(seed=0)
    unet = pipe.unet
    x, emb = unet_inputs(pipe)
    cond = pipe.encode_prompts(["a dog", "a cat"], 1, (128, 128))  # SDXL: with its added conditions
    kwargs = {**cond.model_kwargs(), "encoder_hidden_states": torch.randn(cond.states.shape)}
    before_procs = dict(unet.attn_processors)
    before_state = {k: v.clone() for k, v in unet.state_dict().items()}
    unet.set_attn_processor(AttnProcessor2_0())
    standard_procs = dict(unet.attn_processors)
    with torch.no_grad():
        ref = unet(x, 500, **kwargs).sample
        ctx = FrescoAttentionContext(AttentionConfig(), num_frames=2)  # step: everything off
        with fresco_attention(unet, ctx, ("up_blocks.", "down_blocks.", "mid_block")) as names:
            assert len(names) == len(guided_layer_names(unet, ("up_blocks", "down_blocks", "mid_block")))
            ours = unet(x, 500, **kwargs).sample
        after = unet(x, 500, **kwargs).sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)  # fp32 round-off
    assert torch.equal(after, ref)
    assert all(unet.attn_processors[k] is v for k, v in standard_procs.items())
    unet.set_attn_processor(dict(before_procs))
    assert all(torch.equal(v, before_state[k]) for k, v in unet.state_dict().items())


def test_processors_restored_on_error(tiny):
    unet = tiny.unet
    before = dict(unet.attn_processors)
    ctx = FrescoAttentionContext(AttentionConfig(), num_frames=2, step=StepConstraints(spatial_guided=True))
    x, emb = unet_inputs(tiny)
    with pytest.raises(KeyError, match="reference pass"), torch.no_grad(), fresco_attention(unet, ctx):
        unet(x, 500, encoder_hidden_states=emb)
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_guided_layers_default_are_decoder_self_attention(tiny):
    names = guided_layer_names(tiny.unet, AttentionConfig().layers)
    assert names and all(n.startswith(("up_blocks.2", "up_blocks.3")) and n.endswith("attn1.processor") for n in names)
    assert {n.split(".")[1] for n in names} == {"2", "3"}  # the authors' SD1.5 layers, from the UNet's layout
    with pytest.raises(ValueError, match="no self-attention"):
        guided_layer_names(tiny.unet, ("up_blocks.0",))


def test_guided_layers_follow_the_sdxl_layout():
    """SDXL's decoder attends in up_blocks 0 and 1 only (1/32, 1/16): the default guides every self-attention there,
    each transformer layer of each block (tiny-xl: 2 attentions x 2 layers in block 0, 2 x 1 in block 1)."""
    unet = make_tiny_xl_pipeline(seed=0).unet
    names = guided_layer_names(unet, AttentionConfig().layers)
    assert {n.split(".")[1] for n in names} == {"0", "1"}
    decoder_self = [n for n in unet.attn_processors if n.startswith("up_blocks.") and n.endswith("attn1.processor")]
    assert sorted(names) == sorted(decoder_self) and len(names) == 6
    with pytest.raises(ValueError, match="no self-attention"):
        guided_layer_names(unet, ("up_blocks.2",))


def test_processor_composes_eq7_then_eq8_then_eq9_as_a_naive_oracle():
    """The processor's order (§3.4): eq. 7 turns the queries into Q' with the reference pass's Q^r, K^r; eq. 8
    attends Q' to the batch's unique tokens for V'; eq. 9 mixes V' along each trajectory, weighted by the layer's
    own Q and K. Checked token by token with loops."""
    from fresco_v2v.attention import FrescoAttnProcessor

    n, hh, ww, g, h, d = 4, 32, 32, 2, 2, 3
    corr = build_correspondence(random_frames(n, hh, ww, 3), random_flows(n, hh, ww, 3), factors=(8,))
    sc = corr.for_tokens((hh // 8) * (ww // 8))
    l = sc.num_tokens
    cfg = AttentionConfig(lambda_s=5.0, lambda_t=3.0)
    q, k, v = rand(g * n, h, l, d, seed=11), rand(g * n, h, l, d, seed=12), rand(g * n, h, l, d, seed=13)
    qr, kr = rand(n, h, l, d, seed=14), rand(n, h, l, d, seed=15)  # one reference for both CFG halves
    ctx = FrescoAttentionContext(cfg, num_frames=n, correspondence=corr, reference_qk={"layer": (qr, kr)})
    out = FrescoAttnProcessor("layer", ctx)._fresco(q, k, v, StepConstraints(True, True, True))

    unique = [int(u) for u in sc.unique_index]
    v_prime = torch.empty_like(v)
    for gi in range(g):
        items = range(gi * n, gi * n + n)
        q7 = {i: softmax_attn(qr[i % n], kr[i % n], q[i], 1 / (cfg.lambda_s * math.sqrt(d))) for i in items}  # eq. 7
        ku = torch.stack([k[gi * n + u // l, :, u % l] for u in unique], dim=1)  # [h, U, d]
        vu = torch.stack([v[gi * n + u // l, :, u % l] for u in unique], dim=1)
        for i in items:
            v_prime[i] = softmax_attn(q7[i], ku, vu, 1 / math.sqrt(d))  # eq. 8: V'
    torch.testing.assert_close(out, eq9_oracle(q, k, v_prime, sc, cfg.lambda_t, n))  # eq. 9 over V', own Q and K
