"""The tiny FRESCO pipeline end to end: determinism, no trace on the UNet, anchors, validation, options."""

import dataclasses

import numpy as np
import pytest
import torch

from fresco_v2v import ConfigError
from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig, ReferenceConfig, StepWindow
from fresco_v2v.correspondence import build_correspondence
from fresco_v2v.flow import DISFlow
from fresco_v2v.optimization import decoder_hooks, optimize_features
from fresco_v2v.testing import make_tiny_pipeline, make_tiny_xl_pipeline, moving_square_clip, wake_controlnets

#: The tiny stacks of both layouts: SD1.5's (4 levels, attention in up_blocks 1-3) and SDXL's (3 levels, attention in
#: up_blocks 0-1, two text encoders and added conditions).
STACKS = {"tiny": make_tiny_pipeline, "tiny-xl": make_tiny_xl_pipeline}


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline(seed=0)


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request):
    """Each tiny stack in turn (the tests of FRESCO's guarantees that hold for every layout)."""
    return STACKS[request.param](seed=0)


def unet_conditioning(pipe, n: int, seed: int):
    """Random conditioning of ``n`` items for a direct UNet call: the text states, plus SDXL's added conditions."""
    g = torch.Generator().manual_seed(seed)
    cond = pipe.encode_prompts(["a dog"] * n, 1, (64, 64))
    states = torch.randn(cond.states.shape, generator=g)
    return dataclasses.replace(cond, states=states).model_kwargs()


@pytest.fixture(scope="module")
def clip():
    return moving_square_clip(6, 64, 64, 20, (10, 16), (4, 2))


def run(pipe, frames, seed=0, **kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("flow_estimator", DISFlow())  # consecutive frames: flows straight between them
    prompt = kw.pop("prompt", "a painting of a dog")
    return pipe(frames, prompt, generator=torch.Generator().manual_seed(seed), **kw)


def test_translates_four_frames_deterministically(stack, clip):
    pipe = stack
    a = run(pipe, clip[:4])
    b = run(pipe, clip[:4])
    assert len(a.frames) == 4 and a.frames[0].shape == (64, 64, 3) and a.frames[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert torch.equal(a.latents, b.latents)
    c = run(pipe, clip[:4], seed=1)
    assert not np.array_equal(a.frames[0], c.frames[0])
    assert {"reference", "denoise", "correspondence", "decode"} <= set(a.trace.seconds)
    opt = a.trace.optimization
    assert opt and {t.block for t in opt} == set(range(len(pipe.unet.up_blocks)))  # SD1.5: 0-3, SDXL: 0-2
    # Adam lowers eq. 4's loss (a 1x1 map at the 1/64 block of a 64 px frame has nothing to lower)
    assert all(t.loss_end <= t.loss_start + 1e-5 for t in opt) and any(t.loss_end < t.loss_start for t in opt)


def test_unet_unchanged_after_run(stack, clip):
    pipe = stack
    unet = pipe.unet
    procs = dict(unet.attn_processors)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    hooks = lambda: [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in unet.modules()]  # noqa: E731
    hooks_before = hooks()
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cond = unet_conditioning(pipe, 2, seed=4)
        before = unet(x, 300, **cond).sample
        run(pipe, clip[:3])
        after = unet(x, 300, **cond).sample
    assert torch.equal(before, after)
    assert dict(unet.attn_processors).keys() == procs.keys()
    assert all(unet.attn_processors[k] is v for k, v in procs.items())
    assert unet.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert hooks() == hooks_before and all(not b._forward_pre_hooks for b in unet.up_blocks)


def test_anchor_latents_restored_exactly(stack, clip):
    pipe = stack
    first = run(pipe, clip[[0, 1, 2]])
    second = run(pipe, clip[[0, 2, 3, 4]], anchors=first.anchors)
    assert len(second.anchors.first) == len(first.anchors.first) == len(first.trace.timesteps) + 1
    for s in range(len(first.anchors.first)):  # at every step, the anchors carry the previous batch's latents
        assert torch.equal(second.anchors.first[s], first.anchors.first[s])
    assert torch.equal(second.latents[0], first.latents[0]) and torch.equal(second.latents[1], first.latents[-1])
    assert np.array_equal(second.frames[0], first.frames[0]) and np.array_equal(second.frames[1], first.frames[-1])
    with pytest.raises(ConfigError, match="anchors"):
        run(pipe, clip[[0, 2, 3]], anchors=first.anchors, num_inference_steps=5)


def test_background_smoothing_meets_the_anchors_as_they_are(pipe, clip, monkeypatch):
    """With anchors, the latents are put back first, then smoothed from frame 2 on: frame 2 is pulled toward the
    anchor's latent (not toward a frame-1 latent overwritten right after), and the anchors stay exact."""
    import fresco_v2v.pipeline as pipeline_module

    first = run(pipe, clip[[0, 1, 2]])
    seen = []
    original = pipeline_module.background_smoothing_step

    def recording(x, *args):
        seen.append((x[1].clone(), args[-1]))
        return original(x, *args)

    monkeypatch.setattr(pipeline_module, "background_smoothing_step", recording)
    masks = np.zeros((4, 64, 64), np.uint8)
    masks[:, :32] = 255  # the top half is foreground, the rest is smoothed
    second = run(pipe, clip[[0, 2, 3, 4]], anchors=first.anchors, background_smoothing=0.5, foreground_masks=masks)
    assert len(seen) == len(first.trace.timesteps)
    for i, (frame1, start) in enumerate(seen):
        assert start == 2 and torch.equal(frame1, first.anchors.last[i + 1][0].to(frame1))
    assert torch.equal(second.latents[1], first.latents[-1])  # smoothing did not move the anchor


@pytest.mark.parametrize(
    "attention,optimization",
    [
        (
            AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
            OptimizationConfig(enabled=False),
        ),
        (AttentionConfig(cross_frame=False), OptimizationConfig(temporal=False)),
        (AttentionConfig(temporal_guided=False), OptimizationConfig(spatial=False, spatial_norm="l1")),
        (
            AttentionConfig(spatial_window=StepWindow(0, 1)),
            OptimizationConfig(bidirectional_temporal=True, adain=False),
        ),
    ],
)
def test_switches(pipe, clip, attention, optimization):
    out = run(pipe, clip[:3], num_inference_steps=3, fresco=FrescoConfig(attention, optimization))
    assert len(out.frames) == 3
    assert torch.isfinite(out.latents).all()
    assert bool(out.trace.optimization) == optimization.enabled


SWITCHES = {
    "eq. 7 spatial-guided attention": FrescoConfig(attention=AttentionConfig(spatial_guided=False)),
    "eq. 8 cross-frame attention": FrescoConfig(attention=AttentionConfig(cross_frame=False)),
    "eq. 9 temporal-guided attention": FrescoConfig(attention=AttentionConfig(temporal_guided=False)),
    "eq. 5 temporal loss": FrescoConfig(optimization=OptimizationConfig(temporal=False)),
    "eq. 6 spatial loss": FrescoConfig(optimization=OptimizationConfig(spatial=False)),
    "the feature optimization": FrescoConfig(optimization=OptimizationConfig(enabled=False)),
}


@pytest.fixture(scope="module")
def all_on(pipe, clip):
    return run(pipe, clip[:3], num_inference_steps=4)


@pytest.mark.parametrize("name", SWITCHES)
def test_each_switch_changes_the_result_alone(pipe, clip, all_on, name):
    """Turning one FRESCO term off changes the latents (same seed and frames): each term acts in a default run."""
    off = run(pipe, clip[:3], num_inference_steps=4, fresco=SWITCHES[name])
    change = (off.latents - all_on.latents).abs().mean() / all_on.latents.abs().mean()
    assert change > 1e-3, f"{name} off changed the latents by {change:.2e} only"


def test_everything_off_couples_no_frames_and_a_prompt_changes_its_own_frame(pipe, clip):
    """Without FRESCO's attention and optimization the frames are independent: another prompt for frame 1 changes
    frame 1 and leaves frames 0 and 2 exactly as they were; with FRESCO it changes frame 1 most."""
    plain = FrescoConfig(
        AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
        OptimizationConfig(enabled=False),
    )
    a = run(pipe, clip[:3], prompt=["a photo of a dog", "a painting", "a cat"], fresco=plain)
    b = run(pipe, clip[:3], prompt=["a photo of a dog", "a pencil drawing", "a cat"], fresco=plain)
    torch.testing.assert_close(a.latents[[0, 2]], b.latents[[0, 2]], rtol=0, atol=0)
    assert (a.latents[1] - b.latents[1]).abs().mean() > 1e-3
    a = run(pipe, clip[:3], prompt=["a photo of a dog", "a painting", "a cat"])
    b = run(pipe, clip[:3], prompt=["a photo of a dog", "a pencil drawing", "a cat"])
    per_frame = (a.latents - b.latents).abs().mean(dim=(1, 2, 3))  # [3]
    assert per_frame.argmax() == 1 and per_frame[1] > 1e-3


def test_per_frame_prompts_and_no_guidance(pipe, clip):
    out = pipe(
        clip[:3],
        ["a photo of a dog", "a painting", "a cat"],
        guidance_scale=1.0,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        flow_estimator=DISFlow(),
    )
    assert len(out.frames) == 3


def test_several_controlnets():
    pipe2 = wake_controlnets(make_tiny_pipeline(seed=0, num_controlnets=2))
    frames = moving_square_clip(3, 64, 64, 16, (8, 8), (2, 2))
    first_only = run(pipe2, frames, controlnet_conditioning_scale=[1.0, 0.0], num_inference_steps=2)
    both = run(pipe2, frames, controlnet_conditioning_scale=[1.0, 0.5], num_inference_steps=2)
    assert len(both.frames) == 3
    # the second ControlNet (non-zero output layers) reaches the result
    assert (both.latents - first_only.latents).abs().mean() > 1e-3 * first_only.latents.abs().mean()
    with pytest.raises(ConfigError, match="controlnet_conditioning_scale"):
        run(pipe2, frames, controlnet_conditioning_scale=[1.0])


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"strength": 0.0}, "strength"),
        ({"strength": 0.1, "num_inference_steps": 4}, "strength"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": ["a", "b"]}, "prompt"),
        # a FRESCO config is checked as it is made (a callable here, so that collecting the tests does not raise)
        (lambda: {"fresco": FrescoConfig(AttentionConfig(lambda_s=0))}, "fresco.attention.lambda_s"),
        (lambda: {"fresco": FrescoConfig(optimization={"spatial_norm": "l2"})}, "fresco.optimization.spatial_norm"),
        (
            lambda: {"fresco": FrescoConfig(optimization=OptimizationConfig(window=StepWindow(0.5, 0.2)))},
            "optimization.window",
        ),
    ],
)
def test_validation_names_the_field(pipe, clip, kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        kwargs = kwargs() if callable(kwargs) else dict(kwargs)
        prompt = kwargs.pop("prompt", "a dog")
        pipe(clip[:3], prompt, **kwargs)


def test_no_silent_correspondence(pipe, clip):
    """Without a correspondence or an estimator the call refuses (no DIS guess behind the caller's back); a
    correspondence built with other token rules than the config's is refused too."""
    with pytest.raises(ConfigError, match="correspondence: expected a Correspondence"):
        pipe(clip[:3], "a dog", num_inference_steps=2)
    off = FrescoConfig(
        AttentionConfig(cross_frame=False, temporal_guided=False), OptimizationConfig(temporal=False)
    )  # nothing needs the correspondence
    assert len(pipe(clip[:3], "a dog", num_inference_steps=2, fresco=off).frames) == 3
    corr = build_correspondence(clip[:3], factors=pipe.decoder_factors, attention_occlusion="any")
    with pytest.raises(ConfigError, match="token occlusion"):
        pipe(clip[:3], "a dog", num_inference_steps=2, correspondence=corr)
    fine = build_correspondence(clip[:3], factors=pipe.decoder_factors)
    a = run(pipe, clip[:3], num_inference_steps=2, correspondence=fine)
    b = run(pipe, clip[:3], num_inference_steps=2)  # the same flows, estimated inside from flow_estimator
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))


def test_frames_must_fit_the_model(pipe):
    with pytest.raises(ConfigError, match="multiples of 64"):
        pipe(np.zeros((2, 100, 128, 3), np.uint8), "a dog")


def test_decoder_hooks_replace_and_are_removed(pipe):
    unet = pipe.unet
    seen = []

    def cb(i, hs):
        seen.append((i, tuple(hs.shape)))
        return hs * 0 if i == 3 else None

    x = torch.randn(1, 4, 16, 16)
    emb = torch.randn(1, 77, 32)
    with torch.no_grad():
        base = unet(x, 10, encoder_hidden_states=emb).sample
        with decoder_hooks(unet, (0, 3), cb):
            zeroed = unet(x, 10, encoder_hidden_states=emb).sample
        again = unet(x, 10, encoder_hidden_states=emb).sample
    assert [s[0] for s in seen] == [0, 3] and not torch.equal(base, zeroed) and torch.equal(base, again)
    assert all(not b._forward_pre_hooks for b in unet.up_blocks)


def test_optimize_features_enables_grad_inside_no_grad():
    frames = moving_square_clip(3, 64, 64, 16, (8, 8), (8, 0))
    sc = build_correspondence(frames, factors=(8,))[8]
    f = torch.randn(6, 5, 8, 8)  # two CFG groups of three frames
    ref = torch.randn(3, 5, 8, 8)
    cfg = OptimizationConfig(iterations=10)
    with torch.no_grad():
        out, start, end = optimize_features(f, 3, cfg, sc, ref)
    assert out.shape == f.shape and not out.requires_grad and end < start
    torch.testing.assert_close(out.mean((2, 3)), f.mean((2, 3)), atol=1e-4, rtol=0)  # AdaIN keeps statistics
    same, s0, e0 = optimize_features(f, 3, dataclasses.replace(cfg, temporal=False, spatial=False), sc, ref)
    assert same is f and s0 == e0 == 0.0


def test_optimization_works_under_inference_mode():
    frames = moving_square_clip(3, 64, 64, 16, (8, 8), (8, 0))
    sc = build_correspondence(frames, factors=(8,))[8]
    with torch.inference_mode():
        f, ref = torch.randn(6, 5, 8, 8), torch.randn(3, 5, 8, 8)
        out, start, end = optimize_features(f, 3, OptimizationConfig(iterations=5), sc, ref)
    assert out.shape == f.shape and end < start


@pytest.mark.parametrize("shared", [False, True])
def test_per_step_noise_per_frame_or_shared(pipe, clip, monkeypatch, shared):
    """The authors draw z_t per frame at every step (default); shared_step_noise draws one for the batch."""
    import fresco_v2v.pipeline as pipeline_module

    drawn = []
    original = pipeline_module.ddpm_step

    def recording(latents, eps, t, t_prev, alphas, z, *rest):
        drawn.append(z.clone())
        return original(latents, eps, t, t_prev, alphas, z, *rest)

    monkeypatch.setattr(pipeline_module, "ddpm_step", recording)
    run(pipe, clip[:3], num_inference_steps=4, shared_step_noise=shared)
    assert len(drawn) == 3
    for z in drawn:
        assert z.shape[0] == (1 if shared else 3)
        if not shared:
            assert not torch.equal(z[0], z[1]) and not torch.equal(z[1], z[2])


def test_optimization_window_is_the_authors():
    """t >= 251 of 1000: at 20 steps and strength 0.75, the 10 steps t = 701 ... 251 (the authors' timesteps[:15])."""
    from fresco_v2v.sampling import sdedit_timesteps
    from fresco_v2v.testing import sd15_scheduler

    ts = [int(t) for t in sdedit_timesteps(sd15_scheduler(), 20, 0.75)]
    window = OptimizationConfig().window
    on = [t for i, t in enumerate(ts) if window.active(i, len(ts), t, 1000)]
    assert on == list(range(701, 250, -50)) and len(on) == 10
    full = [int(t) for t in sdedit_timesteps(sd15_scheduler(), 20, 1.0)]
    assert [t for i, t in enumerate(full) if window.active(i, 20, t, 1000)] == full[:15]


@pytest.mark.parametrize("guidance_batch", [True, False])
@pytest.mark.parametrize("controlnet", [False, True])
def test_reference_pass_batch_and_controlnet(pipe, clip, guidance_batch, controlnet):
    """#18 point 3: the authors' reference pass is the UNet alone on the CFG batch [negative; positive]."""
    unet_calls, control_calls = [], []

    def on_unet(module, args, kwargs):
        emb = kwargs["encoder_hidden_states"]
        unet_calls.append((args[0].shape[0], emb.detach().clone(), kwargs.get("down_block_additional_residuals")))

    h1 = pipe.unet.register_forward_pre_hook(on_unet, with_kwargs=True)
    h2 = pipe.controlnet.register_forward_pre_hook(lambda m, a: control_calls.append(a[0].shape[0]))
    try:
        fresco = FrescoConfig(reference=ReferenceConfig(controlnet=controlnet, guidance_batch=guidance_batch))
        out = run(pipe, clip[:3], fresco=fresco, negative_prompt="ugly", guidance_scale=7.5)
    finally:
        h1.remove()
        h2.remove()
    steps = len(out.trace.timesteps)
    assert len(unet_calls) == steps + 1  # the reference pass, then one call a step
    ref_batch, ref_emb, ref_down = unet_calls[0]
    assert ref_batch == (6 if guidance_batch else 3)
    step_emb = unet_calls[1][1]  # [negative x3; positive x3]
    assert torch.equal(ref_emb, step_emb if guidance_batch else step_emb[3:])
    assert (ref_down is not None) == controlnet
    assert len(control_calls) == steps + int(controlnet)


def test_reference_records_per_half_reach_attention_and_loss(pipe, clip, monkeypatch):
    """With the CFG batch, the unconditional half is guided by its own Q^r and f^r, not the positive half's."""
    from fresco_v2v import optimization

    seen = []
    real = optimization.optimize_features

    def spy(f, num_frames, config, scale_corr, f_ref):
        seen.append((f.shape[0], None if f_ref is None else f_ref.clone()))
        return real(f, num_frames, config, scale_corr, f_ref)

    monkeypatch.setattr(optimization, "optimize_features", spy)
    run(pipe, clip[:3], negative_prompt="ugly", guidance_scale=7.5)
    assert seen and all(b == 6 and r is not None and r.shape[0] == 6 for b, r in seen)
    assert any(not torch.allclose(r[:3], r[3:]) for _, r in seen)  # the halves were recorded apart


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(pipe, clip):
    enc = pipe.text_encoder
    ids = pipe.tokenizer(
        ["a dog"], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        out = enc(ids, output_hidden_states=True)
        last = pipe.encode_text(["a dog"])
        skip2 = pipe.encode_text(["a dog"], clip_skip=2)
        torch.testing.assert_close(last, out.last_hidden_state)
        torch.testing.assert_close(pipe.encode_text(["a dog"], clip_skip=1), last)
        torch.testing.assert_close(skip2, enc.final_layer_norm(out.hidden_states[-2]))
    assert not torch.allclose(skip2, last)
    a, b = run(pipe, clip[:3]), run(pipe, clip[:3], clip_skip=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    with pytest.raises(ConfigError) as e:
        run(pipe, clip[:3], clip_skip=enc.config.num_hidden_layers + 1)
    assert e.value.field == "clip_skip"


def test_no_controlnet_equals_a_zero_controlnet(clip):
    """A pipeline without ControlNet is the UNet alone: the same output as with a ControlNet whose residuals are 0."""
    bare, zero = make_tiny_pipeline(seed=0, num_controlnets=0), make_tiny_pipeline(seed=0, num_controlnets=1)
    assert bare.controlnet is None and bare.num_controlnets == 0
    a, b = run(bare, clip[:3]), run(zero, clip[:3])
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))


def test_background_smoothing_acts_on_the_background_only(pipe, clip):
    """All-foreground masks leave every latent as without smoothing; all-background masks change them."""
    plain = run(pipe, clip[:3])
    fg = np.full((3, 64, 64), 255, np.uint8)
    all_fg = run(pipe, clip[:3], background_smoothing=0.5, foreground_masks=fg)
    all_bg = run(pipe, clip[:3], background_smoothing=0.5, foreground_masks=np.zeros_like(fg))
    torch.testing.assert_close(all_fg.latents, plain.latents, rtol=0, atol=0)
    assert (all_bg.latents - plain.latents).abs().mean() > 1e-3 * plain.latents.abs().mean()
