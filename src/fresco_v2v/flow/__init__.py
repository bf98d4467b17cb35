"""Optical flow and occlusion: the temporal correspondence w_i^j, M_i^j of paper §3.2.

Convention everywhere in fresco-v2v: ``flow = estimate_flow(src, dst)`` is a float32 [H, W, 2] field of (dx, dy)
pixel offsets with ``src(x) ~ dst(x + flow(x))``, and the occlusion mask of that pair marks the pixels of ``src``
that have no match in ``dst``. Warping is backward: ``warp(dst, flow)(x) = dst(x + flow(x))`` lands on src's grid.

Modules: :mod:`.geometry` (warp, composition, the occlusion test), :mod:`.estimators` (the backend protocol, DIS,
names), :mod:`.sequence` (consecutive frames), :mod:`.keyframe` (keyframes far apart, through the frames between),
:mod:`.gmflow` (the paper's GMFlow, our implementation, loading the public checkpoint).
"""

from .estimators import (
    FLOW_BACKENDS,
    GMFLOW,
    DISFlow,
    FlowEstimator,
    check_flow_name,
    estimate_flow,
    flow_names,
    get_flow_estimator,
)
from .geometry import (
    FB_ALPHA,
    FB_BETA,
    PHOTO_THRESHOLD,
    compose_flows,
    forward_backward_error,
    occlusion_from_flows,
    out_of_frame,
    sample_flow,
    sampling_grid,
    warp,
)
from .keyframe import (
    KeyframeFlowConfig,
    KeyframeFlowStats,
    anchor_flow,
    batch_keyframe_flows,
    chain_of,
    compose_pairs,
    keyframe_flows,
    select_flow_candidates,
)
from .sequence import BidirectionalFlow, estimate_pair, sequence_flows

__all__ = [
    "FB_ALPHA",
    "FB_BETA",
    "FLOW_BACKENDS",
    "GMFLOW",
    "PHOTO_THRESHOLD",
    "BidirectionalFlow",
    "DISFlow",
    "FlowEstimator",
    "KeyframeFlowConfig",
    "KeyframeFlowStats",
    "anchor_flow",
    "batch_keyframe_flows",
    "chain_of",
    "check_flow_name",
    "compose_flows",
    "compose_pairs",
    "estimate_flow",
    "estimate_pair",
    "flow_names",
    "forward_backward_error",
    "get_flow_estimator",
    "keyframe_flows",
    "occlusion_from_flows",
    "out_of_frame",
    "sample_flow",
    "sampling_grid",
    "select_flow_candidates",
    "sequence_flows",
    "warp",
]
