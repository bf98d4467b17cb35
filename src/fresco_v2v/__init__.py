"""fresco-v2v: zero-shot video-to-video translation after FRESCO (Yang et al., CVPR 2024).

One module per stage: ``video`` (I/O), ``keyframes`` (Alg. 1, batch plan), ``flow`` (optical flow, occlusion),
``correspondence`` (the per-batch FRESCO correspondence), ``attention`` (eq. 7-9), ``losses`` and ``optimization``
(eq. 4-6), ``sampling`` (eq. 1-3), ``pipeline`` (`FrescoPipeline`), ``models`` (loading), ``control`` (ControlNet
conditions), ``propagate`` and ``patchmatch`` (non-keyframes), ``metrics`` (Table 1), ``config`` and ``runner``
(`translate_video`, the one entry point of the CLI), ``testing`` (tiny models and synthetic clips).
"""

from .errors import ConfigError, FrescoError, InputError, ModelNotFound, OutOfMemory

__version__ = "0.1.0.dev0"

__all__ = ["ConfigError", "FrescoError", "InputError", "ModelNotFound", "OutOfMemory", "__version__"]
