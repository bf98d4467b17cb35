"""Optical flow and occlusion on synthetic clips with known motion, and the occlusion check against a naive loop."""

import numpy as np
import pytest
import torch
from oracles import naive_occlusion

from fresco_v2v import ConfigError
from fresco_v2v.flow import (
    DISFlow,
    FlowEstimator,
    estimate_flow,
    get_flow_estimator,
    occlusion_from_flows,
    sequence_flows,
    warp,
)
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip


@pytest.mark.parametrize("backend", ["dis", "dis-fine"])
@pytest.mark.parametrize("shift", [(3, -2), (-5, 0), (0, 4), (7, 6)])
def test_dis_backends_epe_on_known_shift(shift, backend):
    clip = shifted_texture_clip(2, 192, 256, shift)
    flow = estimate_flow(clip[1], clip[0], get_flow_estimator(backend))  # frame1(x) = frame0(x - shift)
    assert flow.dtype == np.float32 and flow.shape == (192, 256, 2)
    b = 8 + max(abs(shift[0]), abs(shift[1]))  # leave out the band entering at the border
    epe = np.linalg.norm(flow[b:-b, b:-b] - (-np.array(shift, np.float32)), axis=-1)
    assert epe.mean() <= 0.5, epe.mean()


def test_dis_is_a_flow_estimator_and_registry():
    assert isinstance(DISFlow(), FlowEstimator)
    assert get_flow_estimator().name == "dis-medium"
    assert get_flow_estimator("dis-fine").name == "dis-fine"
    with pytest.raises(ConfigError, match="flow"):
        get_flow_estimator("gmflow-not-installed")
    with pytest.raises(ConfigError, match="preset"):
        DISFlow("slowest")


def test_estimate_flow_rejects_mismatched_frames():
    with pytest.raises(ConfigError, match="frames"):
        estimate_flow(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_warp_integer_shift_is_exact():
    img = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7)
    flow = torch.zeros(2, 6, 7, 2)
    flow[..., 0] = 1.0  # out(x) = img(x + 1)
    out = warp(img, flow)
    torch.testing.assert_close(out[..., :-1], img[..., 1:])
    torch.testing.assert_close(out[..., -1], img[..., -1])  # border clamp


def test_occlusion_matches_naive_loop():
    rng = np.random.default_rng(3)
    h, w = 12, 14
    fwd = (rng.normal(size=(h, w, 2)) * 2).astype(np.float32)
    bwd = (-fwd + rng.normal(size=(h, w, 2)) * 0.6).astype(np.float32)
    src = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    dst = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    got = occlusion_from_flows(
        torch.from_numpy(fwd)[None],
        torch.from_numpy(bwd)[None],
        torch.from_numpy(src).permute(2, 0, 1)[None].float(),
        torch.from_numpy(dst).permute(2, 0, 1)[None].float(),
    )[0].numpy()
    expect = naive_occlusion(fwd, bwd, src, dst)
    assert 0 < expect.sum() < expect.size  # a meaningful mix
    np.testing.assert_array_equal(got, expect)


def test_uncovered_band_behind_moving_square_is_occluded():
    # Square of 40 px at x=40..79 moving +6 px/frame: in frame 1 the band x=40..45 shows background that the square
    # covered in frame 0, so those pixels of frame 1 have no match in frame 0.
    clip = moving_square_clip(2, 128, 160, 40, (40, 40), (6, 0))
    bf = sequence_flows(clip)
    occ = bf.occ_bwd[0].numpy()  # pixels of frame 1 not visible in frame 0
    band = np.zeros_like(occ)
    band[40:80, 40:46] = True
    assert occ[band].mean() >= 0.6
    far = np.ones_like(occ)
    far[28:92, 28:98] = False  # away from the square's edges in both frames
    assert occ[far].mean() <= 0.02
    # The other direction: the background the square moves onto (x=80..85 of frame 0) is hidden in frame 1.
    occ_f = bf.occ_fwd[0].numpy()
    assert occ_f[40:80, 80:86].mean() >= 0.6


def test_entering_border_band_is_occluded():
    clip = shifted_texture_clip(2, 96, 128, (4, 0))  # content moves right; a band enters at the left of frame 1
    bf = sequence_flows(clip)
    occ = bf.occ_bwd[0].numpy()
    assert occ[8:-8, :3].mean() >= 0.9
    assert occ[8:-8, 16:-8].mean() <= 0.01


def test_sequence_flows_shapes_and_single_frame():
    clip = shifted_texture_clip(3, 64, 64, (1, 1))
    bf = sequence_flows(clip)
    assert bf.fwd.shape == (2, 64, 64, 2) and bf.occ_bwd.dtype == torch.bool
    one = sequence_flows(clip[:1])
    assert one.fwd.shape == (0, 64, 64, 2)
    with pytest.raises(ConfigError, match="frames"):
        sequence_flows(clip.astype(np.float32))
