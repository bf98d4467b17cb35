"""Our GMFlow: the checkpoint's name/shape table, strict loading, and each part against a small naive oracle.

With random weights (no checkpoint is downloaded here); a test with the real checkpoint runs when one is found
(``./model/``, ``./models/``, torch hub's checkpoints folder, or FRESCO_GMFLOW_CHECKPOINT).
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fresco_v2v import ModelNotFound
from fresco_v2v.flow import get_flow_estimator
from fresco_v2v.flow.gmflow import CHECKPOINT_NAME, GMFlow, GMFlowEstimator, find_checkpoint, load_gmflow
from fresco_v2v.flow.gmflow.matching import convex_upsample, global_matching
from fresco_v2v.flow.gmflow.transformer import (
    MASKED_SCORE,
    merge_windows,
    shifted_window_mask,
    split_windows,
    window_attention,
)
from fresco_v2v.testing import shifted_texture_clip


def expected_table() -> dict[str, tuple[int, ...]]:
    """The public gmflow_sintel checkpoint's tensors, written out from the architecture (paper + README)."""
    t = {"backbone.conv1.weight": (64, 3, 7, 7)}
    for layer, (cin, cout) in enumerate(((64, 64), (64, 96), (96, 128)), start=1):
        for block in (0, 1):
            i = cin if block == 0 else cout
            t[f"backbone.layer{layer}.{block}.conv1.weight"] = (cout, i, 3, 3)
            t[f"backbone.layer{layer}.{block}.conv2.weight"] = (cout, cout, 3, 3)
            if block == 0 and layer > 1:  # stride 2: a 1x1 projection with bias
                t[f"backbone.layer{layer}.{block}.downsample.0.weight"] = (cout, i, 1, 1)
                t[f"backbone.layer{layer}.{block}.downsample.0.bias"] = (cout,)
    t["backbone.conv2.weight"], t["backbone.conv2.bias"] = (128, 128, 1, 1), (128,)
    for i in range(6):
        for part in ("self_attn", "cross_attn_ffn"):
            p = f"transformer.layers.{i}.{part}"
            for name in ("q_proj", "k_proj", "v_proj", "merge"):
                t[f"{p}.{name}.weight"] = (128, 128)
            t[f"{p}.norm1.weight"], t[f"{p}.norm1.bias"] = (128,), (128,)
        p = f"transformer.layers.{i}.cross_attn_ffn"
        t[f"{p}.mlp.0.weight"], t[f"{p}.mlp.2.weight"] = (1024, 256), (128, 1024)
        t[f"{p}.norm2.weight"], t[f"{p}.norm2.bias"] = (128,), (128,)
    for name in ("q_proj", "k_proj"):
        t[f"feature_flow_attn.{name}.weight"], t[f"feature_flow_attn.{name}.bias"] = (128, 128), (128,)
    t["upsampler.0.weight"], t["upsampler.0.bias"] = (256, 130, 3, 3), (256,)
    t["upsampler.2.weight"], t["upsampler.2.bias"] = (576, 256, 1, 1), (576,)
    return t


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GMFlow().eval()


def test_parameter_names_and_shapes_match_the_checkpoint(model):
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert mine == expected_table()
    assert len(mine) == 123 and sum(math.prod(s) for s in mine.values()) == 4_680_288


def test_strict_load_round_trip(model, tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"model": model.state_dict()}, path)  # the public file's layout
    loaded = load_gmflow(path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    a, b = shifted_texture_clip(2, 64, 96, (3, 1))
    e1, e2 = GMFlowEstimator(model, "cpu"), GMFlowEstimator(loaded, "cpu")
    np.testing.assert_array_equal(e1(a, b), e2(a, b))
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict loads too
    load_gmflow(tmp_path / "bare.pth")
    broken = dict(model.state_dict())
    broken.pop("upsampler.2.bias")
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(ModelNotFound, match="missing \\['upsampler.2.bias'\\], unexpected \\['extra.weight'\\]"):
        load_gmflow(tmp_path / "broken.pth")
    torch.save({"model": {"x": Path("not a tensor")}}, tmp_path / "pickle.pth")  # needs unpickling code
    with pytest.raises(ModelNotFound, match="not a readable checkpoint"):
        load_gmflow(tmp_path / "pickle.pth")


def test_window_split_merge_and_shift_mask_against_loops():
    b, h, w, c, k = 2, 8, 12, 3, 2
    x = torch.randn(b, h, w, c)
    win = split_windows(x, k)
    wh, ww = h // k, w // k
    for bi in range(b):
        for i in range(k):
            for j in range(k):
                torch.testing.assert_close(
                    win[bi * k * k + i * k + j], x[bi, i * wh : (i + 1) * wh, j * ww : (j + 1) * ww]
                )
    torch.testing.assert_close(merge_windows(win, k), x)
    # mask oracle: after rolling by half a window, two tokens of a window may attend iff they were neighbours within
    # one window's reach before the roll (the wrap-around brings far-apart tokens together)
    mask = shifted_window_mask(h, w, k)
    sh, sw = wh // 2, ww // 2
    for i in range(k):
        for j in range(k):
            cells = [(i * wh + y, j * ww + x_) for y in range(wh) for x_ in range(ww)]
            orig = [((y + sh) % h, (x_ + sw) % w) for y, x_ in cells]
            for p, (py, px) in enumerate(orig):
                for q, (qy, qx) in enumerate(orig):
                    near = abs(py - qy) < wh and abs(px - qx) < ww
                    assert mask[i * k + j, p, q] == (0.0 if near else MASKED_SCORE)
    assert (mask != 0).any()


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_against_a_loop_over_windows(shifted):
    b, h, w, c, k = 1, 4, 6, 5, 2
    q, kk, v = (torch.randn(b, h * w, c) for _ in range(3))
    got = window_attention(q, kk, v, h, w, k, shifted_window_mask(h, w, k) if shifted else None)
    wh, ww = h // k, w // k
    sh, sw = (wh // 2, ww // 2) if shifted else (0, 0)
    grid = lambda t: t.view(h, w, c)  # noqa: E731
    expect = torch.zeros(h, w, c)
    for y in range(h):
        for x in range(w):
            ry, rx = (y - sh) % h, (x - sw) % w  # where the roll put this token
            iy, ix = ry // wh, rx // ww
            keys = [
                ((yy + sh) % h, (xx + sw) % w)
                for yy in range(iy * wh, iy * wh + wh)
                for xx in range(ix * ww, ix * ww + ww)
            ]
            if shifted:  # only tokens that were within a window's reach of this one before the roll
                keys = [(a, b_) for a, b_ in keys if abs(a - y) < wh and abs(b_ - x) < ww]
            ks = torch.stack([grid(kk[0])[a, b_] for a, b_ in keys])
            vs = torch.stack([grid(v[0])[a, b_] for a, b_ in keys])
            weights = torch.softmax(ks @ grid(q[0])[y, x] / math.sqrt(c), dim=0)
            expect[y, x] = weights @ vs
    torch.testing.assert_close(got[0].view(h, w, c), expect, atol=1e-5, rtol=1e-4)


def test_global_matching_recovers_a_known_integer_shift():
    c, h, w, dx, dy = 64, 10, 12, 3, -2
    f0 = torch.randn(1, c, h, w) * 4  # sharp features: the softmax is nearly one-hot
    f1 = torch.roll(f0, shifts=(dy, dx), dims=(2, 3))  # f1(x + d) = f0(x)
    flow = global_matching(f0, f1, bidirectional=True)
    assert flow.shape == (2, 2, h, w)
    inner = (slice(2, h - 2), slice(3, w - 3))  # away from the wrap-around
    torch.testing.assert_close(flow[0, 0][inner], torch.full((h - 4, w - 6), float(dx)), atol=1e-3, rtol=0)
    torch.testing.assert_close(flow[0, 1][inner], torch.full((h - 4, w - 6), float(dy)), atol=1e-3, rtol=0)
    torch.testing.assert_close(flow[1, 0][inner], torch.full((h - 4, w - 6), float(-dx)), atol=1e-3, rtol=0)
    torch.testing.assert_close(flow[1, 1][inner], torch.full((h - 4, w - 6), float(-dy)), atol=1e-3, rtol=0)


def test_convex_upsampling_against_a_loop():
    b, h, w, f = 1, 3, 4, 2
    flow = torch.randn(b, 2, h, w)
    mask = torch.randn(b, 9 * f * f, h, w)
    got = convex_upsample(flow, mask, f)
    expect = torch.zeros(b, 2, f * h, f * w)
    for y in range(h):
        for x in range(w):
            for i in range(f):
                for j in range(f):
                    logits = [mask[0, n * f * f + i * f + j, y, x] for n in range(9)]
                    weights = torch.softmax(torch.stack(logits), 0)
                    acc = torch.zeros(2)
                    for n, (ddy, ddx) in enumerate((a, b_) for a in (-1, 0, 1) for b_ in (-1, 0, 1)):
                        yy, xx = y + ddy, x + ddx
                        if 0 <= yy < h and 0 <= xx < w:  # zero beyond the border
                            acc += weights[n] * f * flow[0, :, yy, xx]
                    expect[0, :, y * f + i, x * f + j] = acc
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


def test_any_size_both_directions_in_one_pass(model):
    est = GMFlowEstimator(model, "cpu")
    a, b = shifted_texture_clip(2, 50, 70, (2, 1))  # not multiples of 16: padded inside
    fwd, bwd = est.bidirectional(a, b)
    assert fwd.shape == (50, 70, 2) and fwd.dtype == np.float32
    np.testing.assert_allclose(fwd, est(a, b), atol=1e-4)
    np.testing.assert_allclose(bwd, est(b, a), atol=1e-4)  # the transposed correlation = the other direction
    two = est.flows(np.stack([a, b]), np.stack([b, a]))  # pairs batched
    np.testing.assert_allclose(two[0][1], est(b, a), atol=1e-4)


def test_checkpoint_lookup_and_the_missing_file_error(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ModelNotFound) as err:
        get_flow_estimator("gmflow")
    text = str(err.value)
    assert CHECKPOINT_NAME in text and str(tmp_path / "models") in text and "hub" in text and "--flow dis" in text
    with pytest.raises(ModelNotFound, match="no such GMFlow checkpoint"):
        get_flow_estimator("gmflow:elsewhere.pth")
    (tmp_path / "models").mkdir()
    torch.save({"model": model.state_dict()}, tmp_path / "models" / CHECKPOINT_NAME)
    assert find_checkpoint() == Path("models") / CHECKPOINT_NAME
    est = get_flow_estimator("gmflow", device="cpu")
    assert isinstance(est, GMFlowEstimator) and est.name.startswith("gmflow:")


REAL = os.environ.get("FRESCO_GMFLOW_CHECKPOINT") or find_checkpoint()


@pytest.mark.skipif(not REAL, reason=f"no real {CHECKPOINT_NAME} found")
def test_real_checkpoint_recovers_a_known_shift():
    est = GMFlowEstimator.from_checkpoint(REAL)
    a, b = shifted_texture_clip(2, 256, 256, (5, -3))  # frame1(x) = frame0(x - shift): flow 1 -> 0 is -shift
    flow = est(b, a)
    epe = np.linalg.norm(flow[16:-16, 16:-16] - np.array([-5.0, 3.0]), axis=-1)
    assert epe.mean() < 0.5, epe.mean()
