"""The SDEdit / DDPM arithmetic of paper §3.1 (eq. 1-3) as small functions with the same leading parameters.

The scheduler supplies the timesteps and the cumulative alphas; these functions take the noise explicitly, so the
pipeline can give every frame of a batch the *same* noise (which ``DDPMScheduler.step`` cannot: it draws noise of
the full batch shape). Tested against ``DDPMScheduler.step`` with the same noise.
"""

from __future__ import annotations

import torch


def sdedit_timesteps(scheduler, num_inference_steps: int, strength: float) -> torch.Tensor:
    """The timesteps SDEdit runs: the last ``round-down(steps * strength)`` of the scheduler's schedule (§3.1)."""
    scheduler.set_timesteps(num_inference_steps)
    run = min(int(num_inference_steps * strength), num_inference_steps)
    return scheduler.timesteps[num_inference_steps - run :]


def alpha_bar(alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    """ᾱ_t, with ᾱ = 1 before the first step (t < 0)."""
    return alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=alphas_cumprod.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε. x0: [N, C, h, w]; noise broadcastable to it (e.g. [1, C, h, w])."""
    ab = alpha_bar(alphas_cumprod, t).to(x0.device, torch.float32)
    return (ab.sqrt() * x0.float() + (1 - ab).sqrt() * noise.float()).to(x0.dtype)


def predict_x0(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    t: int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Eq. 3: x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t (or its v-prediction form)."""
    ab = alpha_bar(alphas_cumprod, t).to(x_t.device, torch.float32)
    x, m = x_t.float(), model_output.float()
    if prediction_type == "epsilon":
        return (x - (1 - ab).sqrt() * m) / ab.sqrt()
    if prediction_type == "v_prediction":
        return ab.sqrt() * x - (1 - ab).sqrt() * m
    raise ValueError(f"prediction_type: expected 'epsilon' or 'v_prediction', got {prediction_type!r}")


def ddpm_step(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor,
    prediction_type: str = "epsilon",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: one DDPM posterior step x_t -> x_{t_prev}; returns (x_prev, x̂_0).

    x_prev = √ᾱ_{t-1} β_t / (1-ᾱ_t) x̂_0 + √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t) x_t + σ_t z with
    σ_t² = (1-ᾱ_{t-1}) / (1-ᾱ_t) β_t, α_t = ᾱ_t/ᾱ_{t-1}, β_t = 1-α_t (steps may skip training timesteps).
    The paper prints the noise term with another coefficient; this is DDPM's posterior (Ho et al. 2020, eq. 6-7),
    which diffusers' DDPMScheduler (variance "fixed_small", no clipping) and the authors' code use.
    ``noise`` (z) is broadcast over the batch: one draw shared by all frames.
    """
    ab = alpha_bar(alphas_cumprod, t).to(x_t.device, torch.float32)
    ab_prev = alpha_bar(alphas_cumprod, t_prev).to(x_t.device, torch.float32)
    alpha = ab / ab_prev
    beta = 1 - alpha
    x0 = predict_x0(x_t, model_output, t, alphas_cumprod, prediction_type)
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t.float()
    if t > 0:
        var = ((1 - ab_prev) / (1 - ab) * beta).clamp(min=1e-20)
        mean = mean + var.sqrt() * noise.float()
    return mean.to(x_t.dtype), x0.to(x_t.dtype)


def background_smoothing(
    x: torch.Tensor,
    background: torch.Tensor,
    flow_bwd: torch.Tensor,
    visible: torch.Tensor,
    alpha: float,
    start: int = 1,
) -> torch.Tensor:
    """Background smoothing (paper §4, after Text2Video-Zero): pull each frame's background toward the previous one.

    x: [N, C, h, w] latents; background: [N, h, w] bool (True where no foreground); flow_bwd: [N-1, h, w, 2] latent-grid
    flow frame i+1 -> i; visible: [N-1, h, w] bool. Frame by frame (so the smoothing chains along the video),
    x_{i+1} <- (1 - α) x_{i+1} + α warp(x_i) on background tokens visible in frame i, for frames i+1 >= ``start``:
    with anchors (§3.5) frames 0 and 1 are the previous batch's and stay exact (``start=2``), and frame 2 is pulled
    toward the anchor's latent. Returns a new tensor.
    """
    from .flow import warp

    out = x.clone()
    for i in range(max(start, 1) - 1, x.shape[0] - 1):  # a loop over frames: each uses the smoothed previous one
        warped = warp(out[i : i + 1].float(), flow_bwd[i : i + 1].to(x.device))[0].to(x.dtype)
        m = (background[i + 1] & visible[i]).to(x.device)[None]  # [1, h, w]
        out[i + 1] = torch.where(m, (1 - alpha) * out[i + 1] + alpha * warped, out[i + 1])
    return out
