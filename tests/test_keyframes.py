"""Alg. 1 and the §3.5 batch plan against naive list implementations, plus the edge cases of the issue."""

import numpy as np
import pytest
from oracles import naive_plan_batches, naive_select_keyframes

from fresco_v2v import ConfigError
from fresco_v2v.keyframes import frame_distances, plan_batches, select_keyframes
from fresco_v2v.testing import moving_square_clip, shifted_texture_clip


def test_distances_zero_for_static_and_first():
    clip = np.repeat(shifted_texture_clip(1, 64, 96, (0, 0)), 4, axis=0)
    d = frame_distances(clip)
    assert d.shape == (4,) and np.all(d == 0)


def test_distances_grow_with_motion():
    small = frame_distances(shifted_texture_clip(2, 128, 128, (1, 0)))
    large = frame_distances(shifted_texture_clip(2, 128, 128, (8, 0)))
    assert small[0] == 0 and large[0] == 0 and 0 < small[1] < large[1]


def test_distances_oracle():
    clip = moving_square_clip(5, 64, 64, 16, (4, 4), (5, 3))
    import cv2

    small = [
        cv2.GaussianBlur(cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA), (0, 0), 1.5) / 255.0 for f in clip
    ]
    expect = [0.0] + [float(np.sqrt(np.mean((small[i] - small[i - 1]) ** 2))) for i in range(1, 5)]
    np.testing.assert_allclose(frame_distances(clip), expect, rtol=1e-9)


def _gaps_ok(keys, m, s_max):
    return keys[0] == 0 and keys[-1] == m - 1 and all(0 < b - a <= s_max for a, b in zip(keys, keys[1:]))


@pytest.mark.parametrize("seed", range(40))
def test_select_matches_oracle_random(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 120))
    s_min = int(rng.integers(1, 8))
    s_max = s_min + int(rng.integers(0, 12))
    d = rng.random(m).round(1)  # rounded, so ties happen
    d[0] = 0
    keys = select_keyframes(d, s_min, s_max)
    assert keys == naive_select_keyframes(list(d), s_min, s_max)
    assert _gaps_ok(keys, m, s_max) or m == 1


def test_select_picks_largest_motion_first():
    d = np.zeros(21)
    d[7], d[13] = 5.0, 3.0
    assert select_keyframes(d, 2, 13) == [0, 7, 20]
    assert select_keyframes(d, 2, 10) == [0, 7, 13, 20]


def test_select_uses_global_argmax_like_the_paper():
    # Alg. 1 line 4 takes the argmax over all candidates, not only inside the gap that is too long.
    d = np.zeros(21)
    d[3] = 9.0
    d[15] = 1.0
    assert select_keyframes(d, 2, 12) == [0, 3, 15, 20]


def test_select_removes_neighbours_within_s_min():
    d = np.zeros(30)
    d[10], d[11], d[12] = 9.0, 8.0, 7.0  # 11 and 12 are within s_min=3 of 10
    keys = select_keyframes(d, 3, 12)
    assert 10 in keys and 11 not in keys and 12 not in keys and 13 in keys


def test_select_ties_go_to_lowest_index():
    assert select_keyframes(np.ones(21), 2, 15) == [0, 2, 4, 6, 20]


def test_select_falls_back_to_midpoint_split():
    # Inserting 12 removes every other candidate (|j - 12| < 10); the gaps of 12 > 11 are split at midpoints.
    d = np.zeros(25)
    d[12] = 1.0
    assert select_keyframes(d, 10, 11) == [0, 6, 12, 18, 24]


def test_select_midpoint_split_when_no_candidate():
    # M-1-s_min < s_min: no candidate at all.
    assert select_keyframes(np.zeros(10), 6, 8) == [0, 4, 9]
    assert select_keyframes(np.zeros(12), 6, 7) == [0, 5, 11]


@pytest.mark.parametrize(
    "m,s,expect",
    [
        (1, 3, [0]),
        (2, 3, [0, 1]),
        (7, 3, [0, 3, 6]),
        (8, 3, [0, 3, 6, 7]),
        (10, 1, list(range(10))),
    ],
)
def test_select_uniform_when_s_min_equals_s_max(m, s, expect):
    assert select_keyframes(np.random.default_rng(0).random(m), s, s) == expect


def test_select_single_and_two_frames():
    assert select_keyframes([0.0], 1, 4) == [0]
    assert select_keyframes([0.0, 3.0], 1, 4) == [0, 1]


@pytest.mark.parametrize("s_min,s_max,m,field", [(0, 4, 5, "s_min"), (5, 4, 5, "s_max"), (1, 4, 0, "frames")])
def test_select_validates(s_min, s_max, m, field):
    with pytest.raises(ConfigError, match=field):
        select_keyframes(np.zeros(m), s_min, s_max)


@pytest.mark.parametrize("n_keys", range(1, 30))
@pytest.mark.parametrize("n", [3, 4, 6, 8])
def test_batches_match_paper_formula(n_keys, n):
    keys = list(range(0, 3 * n_keys, 3))
    batches = plan_batches(keys, n)
    assert batches == naive_plan_batches(keys, n)
    new = [k for i, b in enumerate(batches) for k in (b if i == 0 else b[2:])]
    assert new == keys  # every key is new in exactly one batch, in order
    assert all(len(b) <= n for b in batches)
    assert all(len(b) >= 3 for b in batches[1:])  # at least one new key after the two anchors
    for prev, b in zip(batches, batches[1:]):
        assert b[0] == keys[0] and b[1] == prev[-1]


def test_batches_example():
    assert plan_batches(list(range(10)), 4) == [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7], [0, 7, 8, 9]]
    assert plan_batches(list(range(9)), 4) == [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7], [0, 7, 8]]
    assert plan_batches([5], 8) == [[5]] and plan_batches([0, 9], 3) == [[0, 9]]


@pytest.mark.parametrize("keys,n,field", [([0, 1], 2, "batch_size"), ([], 4, "keys"), ([3, 1], 4, "keys")])
def test_batches_validate(keys, n, field):
    with pytest.raises(ConfigError, match=field):
        plan_batches(keys, n)


def test_keyframe_prompt_keys_as_digit_strings():
    from fresco_v2v.config import prompt_for_frame

    assert prompt_for_frame("a dog", "hq", {"12": "rain"}, 12, 24.0) == "a dog, rain, hq"
    assert prompt_for_frame("a dog", "hq", {"12": "rain"}, 11, 24.0) == "a dog, hq"
    assert prompt_for_frame("a dog", "", {"0.5s": "snow"}, 12, 24.0) == "a dog, snow"


def test_keyframe_prompt_time_on_a_variable_rate_clip():
    from fresco_v2v.config import prompt_for_frame

    seconds = [0.0, 0.04, 0.5, 0.54, 1.2]  # a stall after frame 1: "0.5s" is frame 2, not round(0.5 * fps)
    assert prompt_for_frame("a dog", "", {"0.5s": "snow"}, 2, 25.0, seconds) == "a dog, snow"
    assert prompt_for_frame("a dog", "", {"0.5s": "snow"}, 1, 25.0, seconds) == "a dog"
    assert prompt_for_frame("a dog", "", {"1s": "rain"}, 3, 25.0, seconds) == "a dog"  # 1 s is nearest frame 4
    assert prompt_for_frame("a dog", "", {"100s": "late"}, 4, 25.0, seconds) == "a dog"  # past the end: no frame
    assert prompt_for_frame("a dog", "", {"100s": "late"}, 4, 25.0) == "a dog"  # as at a constant rate
