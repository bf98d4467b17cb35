"""GMFlow, the flow network of the FRESCO paper (§4), ours, loading the public checkpoint.

One concern a module: :mod:`.backbone` (CNN features at 1/8), :mod:`.transformer` (self/cross attention in shifted
windows), :mod:`.matching` (global matching, flow propagation, convex upsampling), :mod:`.model` (the network),
:mod:`.estimator` (checkpoint lookup and the FlowEstimator).
"""

from .estimator import (
    CHECKPOINT_NAME,
    GMFlowEstimator,
    checkpoint_folders,
    find_checkpoint,
    load_gmflow,
)
from .model import GMFlow

__all__ = ["CHECKPOINT_NAME", "GMFlow", "GMFlowEstimator", "checkpoint_folders", "find_checkpoint", "load_gmflow"]
