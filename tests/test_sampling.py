"""Eq. 1-3 against diffusers' DDPMScheduler with the same noise, and SDEdit's timesteps."""

import pytest
import torch

from fresco_v2v.config import StepWindow
from fresco_v2v.sampling import add_noise, ddpm_step, predict_x0, sdedit_timesteps
from fresco_v2v.testing import sd15_scheduler


@pytest.fixture
def sched():
    return sd15_scheduler()


def test_add_noise_matches_scheduler(sched):
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([500, 500])
    torch.testing.assert_close(add_noise(x0, eps, 500, sched.alphas_cumprod), sched.add_noise(x0, eps, t))


@pytest.mark.parametrize("steps", [4, 20])
def test_ddpm_step_matches_scheduler_with_same_noise(sched, steps):
    sched.set_timesteps(steps)
    ts = [int(t) for t in sched.timesteps]
    x = torch.randn(1, 4, 8, 8)
    for i, t in enumerate(ts):
        eps = torch.randn(1, 4, 8, 8)
        expect = sched.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(i))
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        ours, x0 = ddpm_step(x, eps, t, t_prev, sched.alphas_cumprod, z)
        torch.testing.assert_close(ours, expect, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0, predict_x0(x, eps, t, sched.alphas_cumprod))
        x = ours


def test_shared_noise_broadcasts_over_frames(sched):
    x = torch.randn(3, 4, 8, 8)
    x[1] = x[0]
    eps = torch.zeros_like(x)
    out, _ = ddpm_step(x, eps, 501, 251, sched.alphas_cumprod, torch.randn(1, 4, 8, 8))
    torch.testing.assert_close(out[0], out[1])  # same input, same noise -> same output


def test_v_prediction_x0():
    ab = torch.linspace(0.99, 0.01, 1000)
    x0, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    t = 400
    xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps
    v = ab[t].sqrt() * eps - (1 - ab[t]).sqrt() * x0
    torch.testing.assert_close(predict_x0(xt, v, t, ab, "v_prediction"), x0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0(xt, v, t, ab, "sample")


def test_sdedit_timesteps(sched):
    assert [int(t) for t in sdedit_timesteps(sched, 20, 1.0)] == [int(t) for t in sched.timesteps]
    ts = sdedit_timesteps(sched, 20, 0.75)
    assert len(ts) == 15 and int(ts[-1]) == 1
    assert len(sdedit_timesteps(sched, 4, 0.1)) == 0


def test_step_windows_are_fractions():
    first75 = StepWindow(0.0, 0.75)
    assert [first75.active(i, 20, 0, 1000) for i in (0, 14, 15, 19)] == [True, True, False, False]
    assert [first75.active(i, 4, 0, 1000) for i in range(4)] == [True, True, True, False]
    until350 = StepWindow(0.0, 0.65, "noise")
    # half-open: t = 350 itself is outside (SD1.5's 20-step schedule runs t = 351 and then 301, never 350)
    assert until350.active(0, 20, 351, 1000) and not until350.active(0, 20, 350, 1000)
    assert until350.active(0, 20, 400, 1000) and not until350.active(0, 20, 300, 1000)


def test_background_smoothing_naive():
    from fresco_v2v.sampling import background_smoothing

    g = torch.Generator().manual_seed(0)
    n, c, h, w = 3, 2, 4, 5
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    flow = torch.zeros(n - 1, h, w, 2, dtype=torch.float64)
    flow[..., 0] = -1.0  # frame i+1 at column j shows frame i's column j-1
    bg = torch.rand(n, h, w, generator=g) > 0.4
    vis = torch.rand(n - 1, h, w, generator=g) > 0.2
    out = background_smoothing(x, bg, flow, vis, 0.6)
    expect = x.clone()
    for i in range(n - 1):
        for yy in range(h):
            for xx in range(w):
                if bg[i + 1, yy, xx] and vis[i, yy, xx]:
                    prev = expect[i, :, yy, max(xx - 1, 0)]
                    expect[i + 1, :, yy, xx] = 0.4 * x[i + 1, :, yy, xx] + 0.6 * prev
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(out[0], x[0])
    # with anchors frames 0 and 1 stay exact and frame 2 is pulled toward frame 1 as it is
    anchored = background_smoothing(x, bg, flow, vis, 0.6, start=2)
    torch.testing.assert_close(anchored[:2], x[:2])
    for yy in range(h):
        for xx in range(w):
            mine = (
                0.4 * x[2, :, yy, xx] + 0.6 * x[1, :, yy, max(xx - 1, 0)]
                if bg[2, yy, xx] and vis[1, yy, xx]
                else x[2, :, yy, xx]
            )
            torch.testing.assert_close(anchored[2, :, yy, xx], mine)
