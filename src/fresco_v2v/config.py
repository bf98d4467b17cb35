"""Typed, validated configuration: one place to import it from.

The FRESCO core's sections (``fresco:`` in a config file) are in ``fresco_config``, the run (`fresco translate`'s
options) in ``run_config``, and how values are checked and errors worded in ``validation``.
"""

from .fresco_config import (
    TOKEN_OCCLUSION_RULES,
    AttentionConfig,
    FrescoConfig,
    OptimizationConfig,
    ReferenceConfig,
    StepWindow,
)
from .run_config import (
    CONTROLNET_TYPES,
    DEFAULT_ADDED_PROMPT,
    DEFAULT_DEPTH_ESTIMATOR,
    DEFAULT_HED_ANNOTATOR,
    DEFAULT_IP_ADAPTER_SCALE,
    DEFAULT_MODEL,
    DEFAULT_NEGATIVE_PROMPT,
    FREEU_SD15,
    NO_CONTROLNET,
    SDXL_CONTROLNET_TYPES,
    SDXL_FP16_VAE,
    RunConfig,
    ip_adapter_spec,
    prompt_for_frame,
    propagation_config,
    style_image_for_frame,
    to_dict,
)
from .validation import MAX_SEED, names_expected

__all__ = [
    "CONTROLNET_TYPES",
    "DEFAULT_ADDED_PROMPT",
    "DEFAULT_DEPTH_ESTIMATOR",
    "DEFAULT_HED_ANNOTATOR",
    "DEFAULT_IP_ADAPTER_SCALE",
    "DEFAULT_MODEL",
    "DEFAULT_NEGATIVE_PROMPT",
    "FREEU_SD15",
    "MAX_SEED",
    "NO_CONTROLNET",
    "SDXL_CONTROLNET_TYPES",
    "SDXL_FP16_VAE",
    "TOKEN_OCCLUSION_RULES",
    "AttentionConfig",
    "FrescoConfig",
    "OptimizationConfig",
    "ReferenceConfig",
    "RunConfig",
    "StepWindow",
    "ip_adapter_spec",
    "names_expected",
    "prompt_for_frame",
    "propagation_config",
    "style_image_for_frame",
    "to_dict",
]
