"""Keyframe flow through the frames in between: composition and selection against naive loops, accuracy on known
motion (better than a flow straight across the gap), anchors, streaming and the run's bookkeeping."""

import numpy as np
import pytest
import torch
from oracles import naive_compose, naive_select

from fresco_v2v import ConfigError
from fresco_v2v.flow import (
    BidirectionalFlow,
    DISFlow,
    KeyframeFlowConfig,
    KeyframeFlowStats,
    anchor_flow,
    batch_keyframe_flows,
    chain_of,
    check_flow_name,
    compose_flows,
    compose_pairs,
    keyframe_flows,
    select_flow_candidates,
    sequence_flows,
)
from fresco_v2v.known_motion import camera_clip
from fresco_v2v.testing import textured_image


@pytest.fixture(scope="module")
def clip():
    """A textured canvas filmed by a fast pan with a patch moving over it: exact flows between any frames."""
    canvas, patch = textured_image(320, 320, 0), textured_image(160, 160, 7)
    return camera_clip(canvas, patch, "pan", 41, (128, 128), patch_radii=(24, 18))


def epe(flow: torch.Tensor, truth) -> float:
    f, visible = truth
    return float(np.linalg.norm(flow.numpy() - f, axis=-1)[visible].mean())


def test_compose_matches_naive_loop():
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(9, 11, 2)) * 3).astype(np.float32)
    b = (rng.normal(size=(9, 11, 2)) * 3).astype(np.float32)
    got = compose_flows(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0].numpy()
    np.testing.assert_allclose(got, naive_compose(a, b), atol=1e-4)


def test_composition_of_true_flows_is_the_true_flow(clip):
    (f1, _), (f2, _) = clip.true_flow(0, 6), clip.true_flow(6, 12)
    f, visible = clip.true_flow(0, 12)
    both = compose_flows(torch.from_numpy(f1)[None], torch.from_numpy(f2)[None])[0].numpy()
    _, vis_mid = clip.true_flow(0, 6)
    keep = visible & vis_mid  # where the point is seen in the middle frame too
    err = np.linalg.norm(both - f, axis=-1)[keep]
    assert np.median(err) < 0.01 and np.quantile(err, 0.97) < 0.05  # bilinear reads mix flows at the patch edge


@pytest.mark.parametrize("seed", range(3))
def test_selection_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    h, w, k, m = 7, 9, 3, 2
    src = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    dst = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    fwd = (rng.normal(size=(k, h, w, 2)) * 2).astype(np.float32)
    bwd = (rng.normal(size=(m, h, w, 2)) * 2).astype(np.float32)
    t = lambda im: torch.from_numpy(im).permute(2, 0, 1)[None].float()  # noqa: E731
    flow, choice = select_flow_candidates(t(src), t(dst), torch.from_numpy(fwd), torch.from_numpy(bwd), 1, 2.0, 3.0)
    ref_flow, ref_choice = naive_select(src, dst, list(fwd), list(bwd), 1, 2.0, 3.0)
    assert len(np.unique(ref_choice)) > 1  # every candidate wins somewhere: the test means something
    np.testing.assert_array_equal(choice.numpy(), ref_choice)
    np.testing.assert_allclose(flow.numpy(), ref_flow, atol=1e-6)


def test_keyframe_flow_beats_the_flow_across_the_gap(clip):
    keys = [0, 10, 20, 30, 40]
    kf = keyframe_flows(clip.frames, keys)
    direct = sequence_flows(clip.frames[keys])
    assert kf.fwd.shape == (4, 128, 128, 2) and kf.occ_bwd.dtype == torch.bool
    ours = [epe(kf.fwd[i], clip.true_flow(a, b)) for i, (a, b) in enumerate(zip(keys, keys[1:]))]
    theirs = [epe(direct.fwd[i], clip.true_flow(a, b)) for i, (a, b) in enumerate(zip(keys, keys[1:]))]
    back = [epe(kf.bwd[i], clip.true_flow(b, a)) for i, (a, b) in enumerate(zip(keys, keys[1:]))]
    assert max(ours) < 1.0 and max(back) < 1.0, (ours, back)
    assert np.mean(theirs) > 3 * np.mean(ours), (theirs, ours)
    # the visible mask: most truly visible pixels are kept, few occluded ones are called visible
    for i, (a, b) in enumerate(zip(keys, keys[1:])):
        _, visible = clip.true_flow(a, b)
        pred = ~kf.occ_fwd[i].numpy()
        assert (pred & visible).sum() / visible.sum() > 0.94
        assert (pred & visible).sum() / pred.sum() > 0.97


def test_each_candidate_matters_and_adjacent_keys(clip):
    stats = KeyframeFlowStats()
    kf = keyframe_flows(clip.frames[:21], [0, 1, 20], stats=stats)
    assert stats.frame_pairs == 20  # each consecutive pair once
    f, b = DISFlow()(clip.frames[0], clip.frames[1]), DISFlow()(clip.frames[1], clip.frames[0])
    np.testing.assert_array_equal(kf.fwd[0].numpy(), f)  # neighbours: the consecutive flow itself
    np.testing.assert_array_equal(kf.bwd[0].numpy(), b)
    shares = stats.to_dict()["chosen"]
    assert set(shares) <= {"composed", "from_composed", "residual", "direct"} and abs(sum(shares.values()) - 1) < 1e-3
    assert sum(v > 0.02 for v in shares.values()) >= 2  # the choice is per pixel, not one candidate everywhere
    only = keyframe_flows(clip.frames[:21], [0, 20], config=KeyframeFlowConfig(candidates=()))  # composed alone
    every = keyframe_flows(clip.frames[:21], [0, 20])
    assert epe(only.fwd[0], clip.true_flow(0, 20)) > 2 * epe(every.fwd[0], clip.true_flow(0, 20))


def test_frames_stream_and_must_reach_the_last_key(clip):
    keys = [0, 5, 12]
    from_array = keyframe_flows(clip.frames[:13], keys)
    from_generator = keyframe_flows((f for f in clip.frames[:13]), keys)
    assert torch.equal(from_array.fwd, from_generator.fwd) and torch.equal(from_array.occ_bwd, from_generator.occ_bwd)
    with pytest.raises(ConfigError, match="frames"):
        keyframe_flows(clip.frames[:10], keys)
    with pytest.raises(ConfigError, match="key_indices"):
        keyframe_flows(clip.frames[:13], [0, 5, 5])
    assert keyframe_flows(clip.frames[:1], [0]).fwd.shape == (0, 128, 128, 2)


def test_anchor_from_the_previous_batch(clip):
    """Batch 1 = [key 0, batch 0's last key, new keys]: its first pair comes from batch 0's flows, composed and
    refined, and is far better than a flow straight across the 30 frames between the keys."""
    frames = clip.frames
    first = batch_keyframe_flows(frames, [0, 10, 20, 30])
    second = batch_keyframe_flows(frames, [0, 30, 35, 40], chain=first)
    assert second.num_pairs == 3
    assert epe(second.fwd[0], clip.true_flow(0, 30)) < 1.5
    assert epe(second.bwd[0], clip.true_flow(30, 0)) < 1.5
    direct = sequence_flows(frames[[0, 30]])
    assert epe(direct.fwd[0], clip.true_flow(0, 30)) > 3 * epe(second.fwd[0], clip.true_flow(0, 30))
    # the chain can be given reduced to one pair (what a run keeps between batches) with the same result
    again = anchor_flow(frames[0], frames[30], chain_of(first))
    torch.testing.assert_close(again.fwd, second.fwd[:1])
    rest = keyframe_flows(frames[30:41], [30, 35, 40])
    assert torch.equal(rest.fwd, second.fwd[1:])


def test_compose_pairs_chains_every_pair(clip):
    truth = [clip.true_flow(a, b) for a, b in ((0, 4), (4, 8), (8, 12))]
    back = [clip.true_flow(b, a) for a, b in ((0, 4), (4, 8), (8, 12))]
    t = lambda xs: torch.stack([torch.from_numpy(f) for f, _ in xs])  # noqa: E731
    occ = torch.zeros(3, 128, 128, dtype=torch.bool)
    fwd, bwd = compose_pairs(BidirectionalFlow(t(truth), t(back), occ, occ))
    f, vis = clip.true_flow(0, 12)
    g, vis_b = clip.true_flow(12, 0)
    assert np.median(np.abs(fwd[0].numpy() - f)[vis]) < 0.01 and np.median(np.abs(bwd[0].numpy() - g)[vis_b]) < 0.01


def test_dis_initialised_calls_do_not_leak_into_plain_ones(clip):
    """OpenCV's DIS keeps using an input flow once given one; our estimator keeps the two kinds of call apart."""
    a, b = clip.frames[0], clip.frames[12]
    fresh = DISFlow()(a, b)
    dis = DISFlow()
    dis.estimate_from(a, b, clip.true_flow(0, 12)[0])
    np.testing.assert_array_equal(dis(a, b), fresh)


def test_config_and_names_are_checked():
    with pytest.raises(ConfigError, match="keyframe_flow.candidates"):
        KeyframeFlowConfig(candidates=("guess",)).validate()
    with pytest.raises(ConfigError, match="keyframe_flow.fb_beta"):
        KeyframeFlowConfig(fb_beta=float("nan")).validate()
    for ok in ("dis", "dis-fine", "gmflow", "gmflow:/some/file.pth"):
        assert check_flow_name(ok) == ok
    for bad in ("raft", "gmflow:", "gmflow: ", 3, None):
        with pytest.raises(ConfigError, match="flow: expected one of"):
            check_flow_name(bad)


class BatchedDIS:
    """DIS behind the batched interface GMFlow offers on a GPU (``pairs_per_call``, ``flows``)."""

    name = "batched-dis"
    pairs_per_call = 3

    def __init__(self):
        self.dis, self.calls = DISFlow(), []

    def __call__(self, src, dst):
        return self.dis(src, dst)

    def flows(self, srcs, dsts):
        self.calls.append(len(srcs))
        return np.stack([self.dis(a, b) for a, b in zip(srcs, dsts)]), np.stack(
            [self.dis(b, a) for a, b in zip(srcs, dsts)]
        )


def test_batched_estimators_get_pairs_in_chunks(clip):
    keys = [0, 4, 11]
    est = BatchedDIS()
    batched = keyframe_flows((f for f in clip.frames[:12]), keys, est)
    assert est.calls == [3, 3, 3, 2]  # 11 pairs, at most 3 frames ahead
    one = keyframe_flows(clip.frames[:12], keys, DISFlow(), config=KeyframeFlowConfig(candidates=()))
    alone = keyframe_flows(clip.frames[:12], keys, est, config=KeyframeFlowConfig(candidates=()))
    assert torch.equal(one.fwd, alone.fwd) and batched.fwd.shape == one.fwd.shape
    est.calls.clear()
    seq = sequence_flows(clip.frames[:5], est)
    assert est.calls == [3, 1] and torch.equal(seq.fwd, sequence_flows(clip.frames[:5]).fwd)
