"""Propagation: render every non-keyframe from the translated keyframes (paper §3.5), in PyTorch, no C++ build.

The paper (following Rerender-A-Video, which runs Ebsynth) translates only keyframes and fills each frame between
two keys from both of them, guided by the source video, then blends the two results. Ours, per frame t between
keys L and R:

1. **Candidates from each key** (``flow_candidate``): the stylized key warped along the source video's optical
   flow t -> key, twice per key: the direct flow (one DIS estimate between t and the key) and the chained flow
   (consecutive-frame flows composed), because each fails where the other holds (large motion vs. drift).
2. **Guided patch synthesis where no flow holds** (``fresco_v2v.patchmatch``): where every flow candidate's
   guide error is high (occlusion, disocclusion, flow failure), PatchMatch over the source frames, coarse to
   fine, with voting, copies stylized patches whose source patch matches frame t.
3. **Guide correction** (``residual_coefficients``): each candidate carries the key's source pixels it came from;
   the difference to frame t's own pixels (lighting, sub-pixel misalignment, small deformations) is mapped into
   the style by the key's local linear colour model (the guided filter's 3x3 regression of stylized on source,
   He et al. 2013), a first-order correction of the copied style. Our addition; it can be switched off.
3b. **Local colour lookup** (``lookup_candidate``, ``apply_colour_lookup``): where the style is a function of colour
   that a linear model cannot follow (posterization thresholds, flat-colour styles), frame t's own colour says what
   changed: near the flow's match in each key, the stylized pixel whose source colour is closest to frame t's
   (guided synthesis with 1x1 patches in a small window). It replaces the blend as far as it is trusted: its colour
   distance plus how well the key's own colours predict its style there (a leave-one-out test on the key,
   ``lookup_self_error``). By default only for keys where that test beats the local linear model clearly
   (``colour_model_error``; ``colour_lookup="auto"``). Our addition.
4. **Blending** (``histogram_preserving_blend``): weights = temporal distance x exp(-(guide error / scale)^2) per
   pixel; the linear mix is then re-contrasted so its local variance equals the weighted variance of the inputs
   (histogram-preserving blending, Heitz & Neyret 2018, in a local form that leaves aligned inputs unchanged); the
   finest band's energy that resampling removed is given back where the candidates agree (``restore_detail``), and
   the result is optionally fused in the gradient domain (``screened_poisson``) to remove remaining ghost edges.

Frames before the first key or after the last one use one key (one-sided); keys are returned unchanged.
Everything runs on the device passed in (CPU, CUDA or MPS); optical flow (OpenCV DIS) runs on the CPU. The frames
between two keys are independent given the keys, so on the CPU several are synthesized at once, in threads
(``PropagationConfig.workers``); each frame's random search has its own seed, so the result is the same for any
number of workers.
"""

from .blend import clamp_to_candidate_range, histogram_preserving_blend, poisson_fuse, restore_detail, screened_poisson
from .colour import (
    apply_colour_lookup,
    apply_residual,
    colour_levels,
    colour_model_error,
    local_colour_lookup,
    lookup_self_error,
    residual_coefficients,
)
from .config import PropagationConfig
from .filters import (
    box_mean,
    detail_energy,
    detail_energy_batch,
    fine_detail,
    guide_error,
    image_gradients,
    neighbour_range,
    sample_channels,
    window_max,
)
from .segments import FrameFlows, estimate_propagation_flows, iter_propagate, key_segments, propagate
from .synthesis import (
    blend_candidates,
    flow_candidate,
    flow_candidates,
    frame_seed,
    key_lookup_error,
    lookup_candidate,
    patch_candidate,
    prepare_key,
    synthesize_frame,
)

__all__ = [
    "FrameFlows",
    "PropagationConfig",
    "apply_colour_lookup",
    "apply_residual",
    "blend_candidates",
    "box_mean",
    "clamp_to_candidate_range",
    "colour_levels",
    "colour_model_error",
    "detail_energy",
    "detail_energy_batch",
    "estimate_propagation_flows",
    "fine_detail",
    "flow_candidate",
    "flow_candidates",
    "frame_seed",
    "guide_error",
    "histogram_preserving_blend",
    "image_gradients",
    "key_lookup_error",
    "key_segments",
    "local_colour_lookup",
    "lookup_candidate",
    "lookup_self_error",
    "neighbour_range",
    "patch_candidate",
    "poisson_fuse",
    "prepare_key",
    "propagate",
    "iter_propagate",
    "residual_coefficients",
    "restore_detail",
    "sample_channels",
    "screened_poisson",
    "synthesize_frame",
    "window_max",
]
