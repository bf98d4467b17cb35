"""The run: everything `fresco translate` needs, with the option names of the command line (dashes -> underscores).

YAML config files and run.json use the same names. Construction validates every value (``fresco_v2v.validation``);
:meth:`RunConfig.validate` adds the checks that need a prompt or the flow and propagation stages.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, StrictBool, StrictFloat, model_validator

from .errors import ConfigError
from .fresco_config import FrescoConfig
from .validation import (
    MAX_SEED,
    Invalid,
    config_class,
    describe,
    flag,
    from_data,
    integer,
    leaf,
    mapping,
    nonblank,
    number,
    path_text,
    section,
    seq,
    text,
)

#: FreeU factors recommended for SD1.x by the FreeU authors, what ``freeu: true`` means (b1, b2 backbone; s1, s2
#: skip).
FREEU_SD15 = {"b1": 1.2, "b2": 1.4, "s1": 0.9, "s2": 0.2}

#: Default base model: SD1.5 on the hub (the paper's experiments use SD1.5-family models, §4).
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: ControlNet types and their default weights, lllyasviel's SD1.5 ControlNets (the authors' ``controlnet_type``
#: canny / depth / hed); a type may name other weights as "TYPE:ID_OR_PATH". canny's condition needs no weights
#: (OpenCV); depth's and hed's need an annotator (``depth_estimator``, ``hed_annotator``).
CONTROLNET_TYPES = {
    "canny": "lllyasviel/sd-controlnet-canny",
    "depth": "lllyasviel/sd-controlnet-depth",
    "hed": "lllyasviel/sd-controlnet-hed",
}
#: The same types' default weights for SDXL models: the diffusers team's SDXL 1.0 ControlNets. hed has none (pass
#: ``hed:ID_OR_PATH``, e.g. a soft-edge SDXL ControlNet).
SDXL_CONTROLNET_TYPES = {
    "canny": "diffusers/controlnet-canny-sdxl-1.0",
    "depth": "diffusers/controlnet-depth-sdxl-1.0",
}
#: A VAE for SDXL in float16: SDXL's own VAE overflows there (NaN, black frames; its config says
#: ``force_upcast``); this fine-tune of it keeps its latents and stays finite in float16.
SDXL_FP16_VAE = "madebyollin/sdxl-vae-fp16-fix"
#: Depth annotator: MiDaS v3 DPT-hybrid, the depth model of the authors' (ControlNet's) depth annotator.
DEFAULT_DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"
#: HED annotator weights: lllyasviel's ControlNetHED.pth in this hub repo (ControlNet 1.1's HED annotator).
DEFAULT_HED_ANNOTATOR = "lllyasviel/Annotators"
#: ``--controlnet none``: no ControlNet, the UNet alone (the authors' ``use_controlnet: False``).
NO_CONTROLNET = "none"
#: Added to every prompt, as the authors' tool does ("a_prompt"): documented choice.
DEFAULT_ADDED_PROMPT = "best quality, extremely detailed"
#: Negative prompt of the authors' tool ("n_prompt").
DEFAULT_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality"
)
#: IP-Adapter scale without ":SCALE": diffusers' IP-Adapter guide, "1.0 means the model is only conditioned on the
#: image prompt, and 0.5 typically produces balanced results between the text and image prompt" (FRESCO keeps a
#: text prompt; the IP-Adapter paper, Ye et al. 2023, uses 1.0 for the image prompt alone).
DEFAULT_IP_ADAPTER_SCALE = 0.5
#: Fields a YAML file may give as one value instead of a list.
_ONE_OR_MORE = ("lora", "controlnet", "controlnet_scale")

_KEYFRAME_KEYS = "frame indices (12) or times ('2.5s') as keys"


def _controlnet_entry(entry: str) -> bool:
    kind, colon, weights = entry.partition(":")
    return entry == NO_CONTROLNET or (kind in CONTROLNET_TYPES and (not colon or bool(weights.strip())))


def _freeu_factors(value) -> bool:
    return isinstance(value, bool) or (len(value) == 4 and all(v >= 0 for v in value))


def _keyframe_keys(values: str):
    """A BeforeValidator for a mapping keyed by frame indices (int) or times ('2.5s'): YAML gives 12 or '12', JSON
    always '12'. ``values``: what the mapping holds, in words."""

    def check(value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(f"a mapping of frame index or time to {values}")
        keys = {k: _prompt_key(k) for k in value}
        for k, key in keys.items():
            if key is None:
                raise Invalid(_KEYFRAME_KEYS, k)
        return {keys[k]: v for k, v in value.items()}

    return BeforeValidator(check)


def ip_adapter_spec(text: str) -> tuple[str, float | None]:
    """'ID|PATH[:SCALE]' -> (source, scale or None), as LoRAs are given (a Windows drive letter is not a scale)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith(("\\", "/")):
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, None


def _ip_adapter_entry(text: str) -> bool:
    source, scale = ip_adapter_spec(text)
    return bool(source.strip()) and (scale is None or (math.isfinite(scale) and scale >= 0))


@config_class(label="config")
class RunConfig:
    """One `fresco translate` run. Field names are the CLI's option names; YAML config files use them too.

    A field's description is its command-line help (``fresco translate --help`` adds the default)."""

    input: path_text("a video file path") = Field(description="video file")
    prompt: text() = Field(description="what the video should become")
    output: path_text("a folder path") = Field("fresco-out", description="output folder; rerun to resume")
    model: text() = Field(
        DEFAULT_MODEL,
        description="hub id, diffusers folder or .safetensors file; 'toy' or 'toy:PATH' for the toy world's trained "
        "model; 'tiny' (random) for testing",
    )
    #: Another VAE for the base model (hub id, folder or file), e.g. the authors' ``stabilityai/sd-vae-ft-mse``;
    #: None: the model's own.
    vae: path_text("a hub id, folder or file", nonblank, null="the model's own") = Field(
        None,
        description="another VAE for the model: hub id, folder or file (the authors use stabilityai/sd-vae-ft-mse)",
    )
    lora: seq(text(), "a list of texts") = Field((), description="LoRA file PATH[:SCALE]; repeatable")
    controlnet: seq(
        text(
            f"a type among {sorted(CONTROLNET_TYPES)}, optionally with weights as TYPE:ID_OR_PATH, or none",
            _controlnet_entry,
        ),
        "a list of ControlNet types, or none",
        nonempty=True,
    ) = Field(
        ("canny",),
        description="ControlNet type (canny, depth, hed), TYPE:ID_OR_PATH for other weights, or none; repeat for "
        "several",
    )
    controlnet_scale: seq(
        number(ge=0, expected="a number >= 0 (1.0: the ControlNet's full effect)"), "a list of numbers"
    ) = Field((1.0,), description="conditioning scale(s), one or one per ControlNet")
    # ControlNet's canny annotator defaults
    canny_low: integer(0, 255) = Field(100, description="canny low threshold")
    canny_high: integer(0, 255) = Field(200, description="canny high threshold")
    #: The depth type's annotator: a transformers DPT depth estimator (hub id or folder).
    depth_estimator: path_text("a hub id, folder or file", nonblank) = Field(
        DEFAULT_DEPTH_ESTIMATOR, description="depth's annotator: a DPT hub id or folder"
    )
    #: The hed type's annotator weights: a hub repo with ControlNetHED.pth, a folder, or the file.
    hed_annotator: path_text("a hub id, folder or file", nonblank) = Field(
        DEFAULT_HED_ANNOTATOR, description="hed's annotator: hub repo, folder or ControlNetHED.pth"
    )
    # SDEdit strength (§3.1); the authors' examples use 0.75
    strength: number(gt=0, le=1) = Field(0.75, description="SDEdit strength in (0, 1]")
    # the authors' configs (num_inference_steps: 20); at most SD's 1000 training steps
    steps: integer(1, 1000) = Field(20, description="denoising steps")
    # SD's usual classifier-free guidance
    guidance_scale: number(ge=0) = Field(7.5, description="classifier-free guidance")
    negative_prompt: text() = Field(DEFAULT_NEGATIVE_PROMPT, description="negative prompt")
    added_prompt: text() = Field(DEFAULT_ADDED_PROMPT, description="text added to every prompt")
    #: Extra prompt text from a frame on: {frame index or "12.5s": text}; applies until the next entry.
    keyframe_prompts: Annotated[dict[Any, text()], _keyframe_keys("prompt text")] = Field(default_factory=dict)
    #: IP-Adapter (Ye et al. 2023) for a style reference image, "ID|PATH[:SCALE]": "tiny" (random, for testing), a
    #: hub repo (h94/IP-Adapter: models/ip-adapter_sd15.safetensors) or a file in one, a .safetensors file or a
    #: folder; SCALE default ``DEFAULT_IP_ADAPTER_SCALE``. None: no IP-Adapter.
    ip_adapter: path_text(
        "ID|PATH[:SCALE] with a scale >= 0 (tiny, a hub id like h94/IP-Adapter, a file or folder)",
        _ip_adapter_entry,
        null="no IP-Adapter",
    ) = Field(
        None,
        description="IP-Adapter for a style image, ID|PATH[:SCALE]: h94/IP-Adapter (its SD1.5 adapter), a file in "
        f"a hub repo, a .safetensors file or folder; 'tiny' (random) for testing; scale default "
        f"{DEFAULT_IP_ADAPTER_SCALE}",
    )
    #: The IP-Adapter's CLIP image encoder: a hub id with an optional subfolder, or a folder; None: the
    #: ``image_encoder/`` folder beside the IP-Adapter's weights (h94/IP-Adapter: models/image_encoder).
    ip_adapter_image_encoder: path_text(
        "a hub id (owner/name[/SUBFOLDER]) or a folder", nonblank, null="the image_encoder/ beside the weights"
    ) = Field(
        None,
        description="the IP-Adapter's image encoder: hub id[/SUBFOLDER] or folder (default: image_encoder/ "
        "beside its weights)",
    )
    #: The style reference image of the whole video (PNG, JPEG, WebP), for the IP-Adapter.
    style_image: path_text("an image file path", nonblank, null="none") = Field(
        None, description="style reference image for the IP-Adapter (one for the whole video)"
    )
    #: Style images from a frame on: {frame index or "12.5s": image path}, until the next entry; the frames before
    #: the first entry take ``style_image``, or without one the first entry's image.
    style_images: Annotated[dict[Any, path_text("an image file path", nonblank)], _keyframe_keys("image path")] = Field(
        default_factory=dict
    )
    seed: integer(0, MAX_SEED) = Field(0, description="random seed")
    # short side: the authors' resize_image(..., 512) (the paper states none)
    resolution: integer(64, expected="a multiple of 64 (e.g. 512)", ok=lambda v: v % 64 == 0) = Field(
        512, description="short side, a multiple of 64"
    )
    max_frames: integer(1, null="every frame") = Field(None, description="use only the first N frames")
    # paper §4: N in [6, 8]
    batch_size: integer(3, expected="an integer >= 3 (two anchor frames plus at least one new keyframe)") = Field(
        8, description="keyframes per batch"
    )
    # authors' keyframe function defaults
    s_min: integer(1) = Field(5, description="smallest keyframe interval")
    s_max: integer(1) = Field(20, description="largest keyframe interval")
    #: Flow backend (``fresco_v2v.flow.get_flow_estimator``): "dis" (OpenCV DIS, no weights) or "gmflow[:PATH]"
    #: (paper §4; the public checkpoint), always through the frames between keyframes (``flow.keyframe_flows``).
    flow: text() = Field(
        "dis",
        description="optical flow backend, used through the frames between keyframes: dis (OpenCV DIS, no "
        "weights), dis-fine, dis-fast, dis-ultrafast, gmflow (the paper's; finds gmflow_sintel-0c07dcb3.pth in "
        "./model/, ./models/ or torch hub's checkpoints) or gmflow:PATH",
    )
    device: text() = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: text() = Field("auto", description="auto (float16 on a GPU, float32 on CPU), float16, float32")
    propagation: flag() = True
    #: Options of the propagation stage by ``fresco_v2v.propagate.PropagationConfig`` field name (YAML section
    #: ``propagation_options:``), e.g. ``{"colour_lookup": True}`` for flat-colour styles; {} = its defaults.
    propagation_options: mapping(expected="a mapping of PropagationConfig names to values") = Field(
        default_factory=dict
    )
    # paper §4.3: keep the input's L, take AB from the result
    colorize: flag() = Field(False, description="keep the input's lightness (§4.3)")
    #: FreeU (Si et al., CVPR 2024) as diffusers implements it (FreeU v1: backbone factors b1, b2 on the first two
    #: decoder stages, Fourier skip factors s1, s2): false (off), true (the FreeU authors' SD1.x values
    #: ``FREEU_SD15``) or [b1, b2, s1, s2]. The FRESCO authors use their own structure-aware variant at 1.2, 1.5,
    #: 1, 1 (not implemented; ``[1.2, 1.5, 1.0, 1.0]`` gives those factors to v1).
    freeu: leaf(
        StrictBool | tuple[StrictFloat, StrictFloat, StrictFloat, StrictFloat],
        "true, false, or four numbers >= 0 [b1, b2, s1, s2] (e.g. [1.2, 1.4, 0.9, 0.2])",
        ok=_freeu_factors,
        convert=lambda v: tuple(v) if isinstance(v, list) else v,
    ) = Field(
        False,
        description="FreeU (diffusers' v1): alone the SD1.x values 1.2,1.4,0.9,0.2, or four factors (the FRESCO "
        "authors run their own variant at 1.2,1.5,1,1)",
    )
    allow_pickle: flag() = Field(False, description="accept trusted .ckpt/.pt checkpoints")
    #: Background smoothing weight α (paper §4, after Text2Video-Zero); 0 = off, the default until a mask source
    #: ships. Needs ``foreground_masks``: a folder of NNNN.png masks by frame index, white = foreground.
    background_smoothing: number(ge=0, le=1, expected="a weight in [0, 1] (0: off)") = Field(
        0.0, description="background smoothing weight (0: off)"
    )
    foreground_masks: path_text("a folder path", null="no masks") = Field(
        None, description="folder of NNNN.png masks, white = foreground"
    )
    #: The per-step noise z_t of eq. 2 drawn once for every frame of a batch instead of per frame (the authors' code
    #: draws it per frame, the default; the paper says neither; README, "Defaults", has the measurement).
    shared_step_noise: flag() = Field(
        False, description="one per-step noise draw for all frames of a batch (off: one per frame, as the authors)"
    )
    #: The text encoder layer the prompt embeddings come from, counted as A1111's "Clip skip": 1 = the last layer
    #: (SD1.5's own, default), 2 = the penultimate (what many anime checkpoints are trained for).
    clip_skip: integer(
        1, 12, expected="an integer in 1..12 (SD1.5's text encoder has 12 layers; 1: the last, 2: A1111's Clip skip 2)"
    ) = Field(1, description="prompt embeddings from the text encoder's N-th layer from the end, as A1111's Clip skip")
    fresco: section(FrescoConfig) = Field(default_factory=FrescoConfig)

    @property
    def controlnet_types(self) -> tuple[str, ...]:
        """The ControlNets to load, as TYPE or TYPE:ID_OR_PATH; () for ``none``."""
        return () if self.controlnet == (NO_CONTROLNET,) else self.controlnet

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        """The rules between fields; each error names the field to change."""
        if int(self.steps * self.strength) < 1:
            raise Invalid(f"steps * strength >= 1 ({self.steps} steps)", self.strength, at=("strength",))
        if self.s_max < self.s_min:
            raise Invalid(f"an integer >= s_min ({self.s_min})", self.s_max, at=("s_max",))
        if self.canny_high < self.canny_low:
            raise Invalid(f"an integer >= canny_low ({self.canny_low})", self.canny_high, at=("canny_high",))
        if NO_CONTROLNET in self.controlnet and self.controlnet != (NO_CONTROLNET,):
            raise Invalid("none alone (no ControlNet), or ControlNet types", list(self.controlnet), at=("controlnet",))
        if len(self.controlnet_scale) not in (1, len(self.controlnet_types)):
            expected = f"one value or {len(self.controlnet_types)} (one per ControlNet)"
            raise Invalid(expected, list(self.controlnet_scale), at=("controlnet_scale",))
        if self.background_smoothing > 0 and not self.foreground_masks:
            expected = "a folder of masks NNNN.png (white = foreground) when background_smoothing > 0"
            raise Invalid(expected, self.foreground_masks, at=("foreground_masks",))
        styled = self.style_image is not None or bool(self.style_images)
        if styled and self.ip_adapter is None:
            given = self.style_image or next(iter(self.style_images.values()))
            expected = f"an IP-Adapter (ID|PATH[:SCALE], e.g. h94/IP-Adapter) for the style image {given}"
            raise Invalid(expected, None, at=("ip_adapter",))
        if self.ip_adapter is not None and not styled:
            expected = f"a style image (style_image, or style_images by keyframe) for the IP-Adapter {self.ip_adapter}"
            raise Invalid(expected, None, at=("style_image",))
        if self.ip_adapter_image_encoder is not None and self.ip_adapter is None:
            expected = f"an IP-Adapter for the image encoder {self.ip_adapter_image_encoder}"
            raise Invalid(expected, None, at=("ip_adapter",))
        return self

    @property
    def ip_adapter_source(self) -> str | None:
        """The IP-Adapter without its scale (what is loaded), or None."""
        return None if self.ip_adapter is None else ip_adapter_spec(self.ip_adapter)[0]

    @property
    def ip_adapter_scale(self) -> float:
        """The IP-Adapter's scale: the one given with it, else ``DEFAULT_IP_ADAPTER_SCALE``."""
        scale = None if self.ip_adapter is None else ip_adapter_spec(self.ip_adapter)[1]
        return DEFAULT_IP_ADAPTER_SCALE if scale is None else scale

    def validate(self) -> RunConfig:
        """The checks construction leaves out: a prompt (``RunConfig(input="", prompt="")`` gives the defaults),
        the flow backend and the propagation options (they import cv2 and torch: not for ``--help``)."""
        if not self.prompt.strip():
            raise ConfigError("prompt", "a non-empty text", self.prompt)
        from .flow import check_flow_name

        check_flow_name(self.flow)
        self.propagation_config()
        return self

    def propagation_config(self):
        """``propagation_options`` as a validated ``PropagationConfig``; an error names the option."""
        return propagation_config(self.propagation_options)

    def to_dict(self) -> dict:
        d = to_dict(self)
        d["keyframe_prompts"] = {str(k): v for k, v in self.keyframe_prompts.items()}
        d["style_images"] = {str(k): v for k, v in self.style_images.items()}
        return d

    @classmethod
    def from_dict(cls, data) -> RunConfig:
        """From plain data (YAML / run.json); unknown fields are an error that names them. YAML conveniences: one
        value for a list of lora, controlnet or controlnet_scale, and null for a section's defaults."""
        if not isinstance(data, dict):
            raise ConfigError("config", "a mapping of option names to values", data, shown=describe(data))
        data = dict(data)
        for name in _ONE_OR_MORE:
            if isinstance(data.get(name), (str, int, float)) and not isinstance(data[name], bool):
                data[name] = (data[name],)
        return from_data(cls, data)


def to_dict(obj) -> dict:
    """A config as plain data (for run.json and YAML)."""
    if hasattr(obj, "__pydantic_fields__"):
        return {name: to_dict(getattr(obj, name)) for name in obj.__pydantic_fields__}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def propagation_config(options, name: str = "propagation_options"):
    """``fresco_v2v.propagate.PropagationConfig`` from options by field name; an error names ``name``.option.

    The flow backend is checked too, so that a misspelt one fails now and not after hours of translation.
    """
    from .flow import check_flow_name
    from .propagate import PropagationConfig  # torch: imported when a run is checked, not for --help

    cfg = from_data(PropagationConfig, {} if options is None else options, name)
    check_flow_name(cfg.flow, f"{name}.flow")
    return cfg


def _prompt_key(key) -> int | str | None:
    """A keyframe-prompt key: a frame index (int or digits) or a time like '2.5s' (finite, >= 0)."""
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    if isinstance(key, str):
        s = key.strip()
        if s.isascii() and s.isdigit():
            return int(s)
        if s.endswith("s"):
            try:
                seconds = float(s[:-1])
            except ValueError:
                return None
            if math.isfinite(seconds) and seconds >= 0:
                return s
    return None


def _entry_starts(entries: dict, fps: float, frame_seconds: list[float] | None, name: str) -> list[tuple[int, Any]]:
    """(first frame, value) of each entry keyed by frame index or time, sorted by frame. A time key ("2.5s") names
    the frame nearest that time: by ``frame_seconds`` (each frame's timestamp, for a variable-rate clip) when given,
    else by ``fps``."""
    out = []
    for key, value in entries.items():
        k = _prompt_key(key)
        if k is None:
            raise ConfigError(name, _KEYFRAME_KEYS, key)
        if isinstance(k, int):
            start = k
        elif frame_seconds is not None:
            t = float(k[:-1])
            # past the last frame's period: no frame (as round(t * fps) past the end is none at a constant rate)
            past_end = t >= frame_seconds[-1] + 0.5 / fps
            start = len(frame_seconds) if past_end else int(np.abs(np.asarray(frame_seconds) - t).argmin())
        else:
            start = round(float(k[:-1]) * fps)
        out.append((start, value))
    return sorted(out, key=lambda e: e[0])


def prompt_for_frame(
    base: str, added: str, keyframe_prompts: dict, frame: int, fps: float, frame_seconds: list[float] | None = None
) -> str:
    """The prompt of one keyframe: base, the extra text of the last keyframe-prompt entry at or before the frame,
    then the added text (all joined by commas). Time keys as :func:`_entry_starts` reads them."""
    entries = _entry_starts(keyframe_prompts, fps, frame_seconds, "keyframe_prompts")
    extra = [t for s, t in entries if s <= frame][-1:]
    return ", ".join(p for p in (base, *extra, added) if p)


def style_image_for_frame(cfg: RunConfig, frame: int, fps: float, frame_seconds: list[float] | None = None) -> str:
    """The style image of one keyframe: the last ``style_images`` entry at or before the frame, else
    ``style_image``, else the first entry's image (time keys as :func:`_entry_starts` reads them)."""
    entries = _entry_starts(cfg.style_images, fps, frame_seconds, "style_images")
    before = [path for s, path in entries if s <= frame]
    if before:
        return before[-1]
    return cfg.style_image if cfg.style_image is not None else entries[0][1]
