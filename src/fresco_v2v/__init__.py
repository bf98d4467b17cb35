"""fresco-v2v: zero-shot video-to-video translation after FRESCO (Yang et al., CVPR 2024).

One module per stage (see DESIGN notes in the README):
``video`` (I/O), ``keyframes`` (Alg. 1, batch plan), ``flow`` (optical flow, occlusion),
``correspondence`` (the per-batch FRESCO spatial-temporal correspondence).
"""

from .errors import ConfigError, FrescoError, InputError, ModelNotFound, OutOfMemory

__version__ = "0.1.0.dev0"

__all__ = ["ConfigError", "FrescoError", "InputError", "ModelNotFound", "OutOfMemory", "__version__"]
