"""Typed, validated configuration of the FRESCO diffusion core. Each default names its source.

Where the paper and the authors' code differ, both are exposed and the paper's value is the default unless noted.
Schedules are fractions of the trajectory, never step numbers (see :class:`StepWindow`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

from .errors import ConfigError

#: Token occlusion rules (``fresco_v2v.correspondence``): a token is occluded when any pixel, more than half of its
#: area, or its centre sample is.
TOKEN_OCCLUSION_RULES = ("any", "area", "centre")


@dataclass(frozen=True)
class StepWindow:
    """Which denoising steps a constraint is active on, as a half-open window [start, end) of a fraction.

    ``axis="steps"``: the fraction is i / n over the n steps actually run (after SDEdit's truncation), so
    ``StepWindow(0, 0.75)`` is the first 75% of the steps whatever n is. ``axis="noise"``: the fraction is
    1 - t / T of the diffusion time (T = the scheduler's training steps), so ``StepWindow(0, 0.65, "noise")`` is
    every step with t >= 0.35 T, whatever the strength and step count.
    """

    start: float = 0.0
    end: float = 1.0
    axis: str = "steps"

    def active(self, step_index: int, num_steps: int, timestep: int, num_train_timesteps: int) -> bool:
        u = step_index / num_steps if self.axis == "steps" else 1.0 - timestep / num_train_timesteps
        return self.start <= u < self.end

    def validate(self, name: str) -> None:
        if self.axis not in ("steps", "noise"):
            raise ConfigError(f"{name}.axis", "'steps' or 'noise'", self.axis)
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ConfigError(name, "0 <= start <= end <= 1", (self.start, self.end))


@dataclass(frozen=True)
class AttentionConfig:
    """FRESCO-guided attention (paper §3.4), on the decoder's self-attention layers."""

    #: Eq. 7 on/off.
    spatial_guided: bool = True
    #: Eq. 8 on/off (off: each frame attends to itself, standard self-attention).
    cross_frame: bool = True
    #: Eq. 9 on/off.
    temporal_guided: bool = True
    #: λ_s of eq. 7, paper §4.
    lambda_s: float = 5.0
    #: λ_t of eq. 9, paper §4.
    lambda_t: float = 5.0
    #: Self-attention layers guided: name prefixes in ``unet.attn_processors`` (paper §3.2 "decoder layers";
    #: the authors' code uses up_blocks 2 and 3, i.e. 1/16 and 1/8 of the frame).
    layers: tuple[str, ...] = ("up_blocks.2", "up_blocks.3")
    #: Spatial-guided attention on the first 5% of the steps: the first step at 20 steps (the authors' practice).
    spatial_window: StepWindow = StepWindow(0.0, 0.05)
    #: Temporal-guided attention while t >= 350/1000 (the authors' practice).
    temporal_window: StepWindow = StepWindow(0.0, 0.65, "noise")
    #: Cross-frame attention on every step (paper §3.4).
    cross_frame_window: StepWindow = StepWindow(0.0, 1.0)
    #: When a token counts as occluded for eq. 8's unique region and eq. 9's links: "area" (more than half of its
    #: pixels, as the authors' code thresholds the downsampled mask at 0.5, default), "centre" (the authors' exact
    #: bilinear downsampling), or "any" pixel (max-pool; empties the correspondence on real motion, README).
    token_occlusion: str = "area"
    #: Queries are chunked so that one attention score block holds at most this many elements (a memory budget:
    #: 2**26 float32 scores = 256 MiB); a documented choice.
    max_attention_elements: int = 2**26


@dataclass(frozen=True)
class OptimizationConfig:
    """FRESCO-aware feature optimization (paper §3.3)."""

    enabled: bool = True
    #: ``unet.up_blocks[i]`` whose input is optimized (paper §3.3: "each decoder layer"; the authors: all four).
    blocks: tuple[int, ...] = (0, 1, 2, 3)
    #: Adam iterations K, paper §4.
    iterations: int = 20
    #: Adam learning rate: paper §4 says 0.4 (default); the authors' code uses 0.2.
    learning_rate: float = 0.4
    #: λ_spat of eq. 6, paper §4, on our scale: both losses are means (README, "How strongly L_spat pulls against
    #: L_temp"; under Adam only the balance of the terms matters).
    lambda_spat: float = 50.0
    #: L_temp (eq. 5) on/off.
    temporal: bool = True
    #: L_spat (eq. 6) on/off.
    spatial: bool = True
    #: Eq. 6 norm: "l1" (the authors' code, default: their balance, measured better in the toy world, README) or
    #: "fro" (the paper's squared Frobenius norm).
    spatial_norm: str = "l1"
    #: Eq. 5 in both directions on the same pairs, i -> i+1 and i+1 -> i (the authors' code, default; their wrap-around
    #: pair, the last frame with frame 0, is left out). False: the paper's one direction.
    bidirectional_temporal: bool = True
    #: Renormalize the optimized feature to the original's per-channel mean and std (authors' code; on).
    adain: bool = True
    #: Optimization while t >= 251 of T = 1000, the first 75% of the *full* schedule: the authors' code optimizes on
    #: ``timesteps[:15]`` of 20 (at strength 0.75 that is 10 of the 15 steps run, t = 701 ... 251). The paper gives
    #: no window. ``StepWindow(0, 0.75)`` (steps axis) is the first 75% of the steps run (12 at strength 0.75).
    window: StepWindow = StepWindow(0.0, 0.75, "noise")
    #: When a token counts as occluded for L_temp's mask M (eq. 5): "any" of its pixels (the authors max-pool the
    #: occlusion for their temporal loss, default), "area" or "centre" (see ``AttentionConfig.token_occlusion``).
    token_occlusion: str = "any"


@dataclass(frozen=True)
class ReferenceConfig:
    """The reference pass (paper §3.3, §3.4): one UNet step over the input frames at t = 1 that records Q^r, K^r
    (eq. 7) and f^r (eq. 6). The paper says only "the input frame"; both defaults follow the authors' code
    (``get_intraframe_paras`` in their ``src/diffusion_hacked.py``)."""

    #: ControlNet residuals in the reference pass. Off (default): the UNet alone, as the authors' code. On: the
    #: reference sees the same ControlNet condition as the denoising steps (fresco-v2v before this option).
    controlnet: bool = False
    #: Under classifier-free guidance, run the pass on the batch [negative; positive] like a denoising step, so the
    #: unconditional half gets its own Q^r, K^r and f^r (default, the authors' code). Off: the positive prompt
    #: only, its records reused for both halves (fresco-v2v before this option; half the pass's batch).
    guidance_batch: bool = True


@dataclass(frozen=True)
class FrescoConfig:
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    @property
    def token_occlusion(self) -> tuple[str, str]:
        """(attention rule, loss rule): what ``build_correspondence`` takes as attention_/loss_occlusion."""
        return self.attention.token_occlusion, self.optimization.token_occlusion

    def validate(self) -> FrescoConfig:
        a, o = self.attention, self.optimization
        for name, value in (("attention.lambda_s", a.lambda_s), ("attention.lambda_t", a.lambda_t)):
            if not value > 0:
                raise ConfigError(name, "a positive number", value)
        if not a.layers or not all(
            isinstance(p, str) and p.startswith(("up_blocks.", "down_blocks.", "mid_block")) for p in a.layers
        ):
            raise ConfigError("attention.layers", "attention-processor name prefixes such as 'up_blocks.2'", a.layers)
        if not (isinstance(a.max_attention_elements, int) and a.max_attention_elements >= 1024):
            raise ConfigError("attention.max_attention_elements", "an integer >= 1024", a.max_attention_elements)
        for name in ("spatial_window", "temporal_window", "cross_frame_window"):
            getattr(a, name).validate(f"attention.{name}")
        for name, rule in (
            ("attention.token_occlusion", a.token_occlusion),
            ("optimization.token_occlusion", o.token_occlusion),
        ):
            if rule not in TOKEN_OCCLUSION_RULES:
                raise ConfigError(name, f"one of {list(TOKEN_OCCLUSION_RULES)}", rule)
        if not (isinstance(o.iterations, int) and o.iterations >= 1):
            raise ConfigError("optimization.iterations", "an integer >= 1", o.iterations)
        if not o.learning_rate > 0:
            raise ConfigError("optimization.learning_rate", "a positive number", o.learning_rate)
        if not o.lambda_spat >= 0:
            raise ConfigError("optimization.lambda_spat", "a number >= 0", o.lambda_spat)
        if o.spatial_norm not in ("fro", "l1"):
            raise ConfigError("optimization.spatial_norm", "'l1' (authors' code) or 'fro' (paper)", o.spatial_norm)
        if not o.blocks or not all(isinstance(b, int) and 0 <= b <= 3 for b in o.blocks):
            raise ConfigError("optimization.blocks", "decoder block indices in 0..3", o.blocks)
        o.window.validate("optimization.window")
        r = self.reference
        for name in ("controlnet", "guidance_batch"):
            if not isinstance(getattr(r, name), bool):
                raise ConfigError(f"reference.{name}", "true or false", getattr(r, name))
        return self


def names_expected(unknown, known, kind: str = "names") -> str:
    """The 'expected' part of an unknown-name error: the likely intended names, else every known one."""
    guesses = sorted({g for u in unknown for g in difflib.get_close_matches(str(u), known, n=1, cutoff=0.6)})
    if guesses:
        return f"known {kind} (did you mean {', '.join(map(repr, guesses))}?)"
    return f"{kind} among {sorted(known)}"


def to_dict(obj) -> dict:
    """A config as plain data (for run.json and YAML)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------------
# The run: everything `fresco translate` needs, with the option names of the command line (dashes -> underscores).

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


@dataclass(frozen=True)
class RunConfig:
    """One `fresco translate` run. Field names are the CLI's option names; YAML config files use them too."""

    input: str
    prompt: str
    output: str = "fresco-out"
    model: str = DEFAULT_MODEL
    #: Another VAE for the base model (hub id, folder or file), e.g. the authors' ``stabilityai/sd-vae-ft-mse``;
    #: None: the model's own.
    vae: str | None = None
    lora: tuple[str, ...] = ()  # "PATH[:SCALE]"
    controlnet: tuple[str, ...] = ("canny",)
    controlnet_scale: tuple[float, ...] = (1.0,)
    canny_low: int = 100  # ControlNet's canny annotator defaults
    canny_high: int = 200
    #: The depth type's annotator: a transformers DPT depth estimator (hub id or folder).
    depth_estimator: str = DEFAULT_DEPTH_ESTIMATOR
    #: The hed type's annotator weights: a hub repo with ControlNetHED.pth, a folder, or the file.
    hed_annotator: str = DEFAULT_HED_ANNOTATOR
    strength: float = 0.75  # SDEdit strength (§3.1); the authors' examples use 0.75
    steps: int = 20  # the authors' configs (num_inference_steps: 20)
    guidance_scale: float = 7.5  # SD's usual classifier-free guidance
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    added_prompt: str = DEFAULT_ADDED_PROMPT
    #: Extra prompt text from a frame on: {frame index or "12.5s": text}; applies until the next entry.
    keyframe_prompts: dict = field(default_factory=dict)
    seed: int = 0
    resolution: int = 512  # short side: the authors' resize_image(..., 512) (the paper states none)
    max_frames: int | None = None
    batch_size: int = 8  # paper §4: N in [6, 8]
    s_min: int = 5  # authors' keyframe function defaults
    s_max: int = 20
    #: Flow backend (``fresco_v2v.flow.get_flow_estimator``): "dis" (OpenCV DIS, no weights) or "gmflow[:PATH]"
    #: (paper §4; the public checkpoint), always through the frames between keyframes (``flow.keyframe_flows``).
    flow: str = "dis"
    device: str = "auto"
    dtype: str = "auto"
    propagation: bool = True
    #: Options of the propagation stage by ``fresco_v2v.propagate.PropagationConfig`` field name (YAML section
    #: ``propagation_options:``), e.g. ``{"colour_lookup": True}`` for flat-colour styles; {} = its defaults.
    propagation_options: dict = field(default_factory=dict)
    colorize: bool = False  # paper §4.3: keep the input's L, take AB from the result
    #: FreeU (Si et al., CVPR 2024) as diffusers implements it (FreeU v1: backbone factors b1, b2 on the first two
    #: decoder stages, Fourier skip factors s1, s2): false (off), true (the FreeU authors' SD1.x values
    #: ``FREEU_SD15``) or [b1, b2, s1, s2]. The FRESCO authors use their own structure-aware variant at 1.2, 1.5,
    #: 1, 1 (not implemented; ``[1.2, 1.5, 1.0, 1.0]`` gives those factors to v1).
    freeu: bool | tuple[float, ...] = False
    allow_pickle: bool = False
    #: Background smoothing weight α (paper §4, after Text2Video-Zero); 0 = off, the default until a mask source
    #: ships. Needs ``foreground_masks``: a folder of NNNN.png masks by frame index, white = foreground.
    background_smoothing: float = 0.0
    foreground_masks: str | None = None
    #: The per-step noise z_t of eq. 2 drawn once for every frame of a batch instead of per frame (the authors' code
    #: draws it per frame, the default; the paper says neither; README, "Defaults", has the measurement).
    shared_step_noise: bool = False
    #: The text encoder layer the prompt embeddings come from, counted as A1111's "Clip skip": 1 = the last layer
    #: (SD1.5's own, default), 2 = the penultimate (what many anime checkpoints are trained for).
    clip_skip: int = 1
    fresco: FrescoConfig = field(default_factory=FrescoConfig)

    @property
    def controlnet_types(self) -> tuple[str, ...]:
        """The ControlNets to load, as TYPE or TYPE:ID_OR_PATH; () for ``none``."""
        return () if self.controlnet == (NO_CONTROLNET,) else self.controlnet

    def validate(self) -> RunConfig:
        def need(ok: bool, name: str, expected: str, given) -> None:
            if not ok:
                raise ConfigError(name, expected, given)

        self._check_types(need)
        need(bool(self.prompt and self.prompt.strip()), "prompt", "a non-empty text", self.prompt)
        need(0.0 < self.strength <= 1.0, "strength", "a number in (0, 1]", self.strength)
        need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1", self.steps)
        need(
            int(self.steps * self.strength) >= 1,
            "strength",
            f"steps * strength >= 1 ({self.steps} steps)",
            self.strength,
        )
        need(self.guidance_scale >= 0, "guidance_scale", "a number >= 0", self.guidance_scale)
        need(
            isinstance(self.resolution, int) and self.resolution >= 64 and self.resolution % 64 == 0,
            "resolution",
            "a multiple of 64 (e.g. 512)",
            self.resolution,
        )
        need(
            self.max_frames is None or (isinstance(self.max_frames, int) and self.max_frames >= 1),
            "max_frames",
            "a positive integer",
            self.max_frames,
        )
        need(
            isinstance(self.batch_size, int) and self.batch_size >= 3,
            "batch_size",
            "an integer >= 3 (two anchor frames plus at least one new keyframe)",
            self.batch_size,
        )
        need(isinstance(self.s_min, int) and self.s_min >= 1, "s_min", "an integer >= 1", self.s_min)
        need(
            isinstance(self.clip_skip, int) and 1 <= self.clip_skip <= 12,
            "clip_skip",
            "an integer in 1..12 (SD1.5's text encoder has 12 layers; 1: the last, 2: A1111's Clip skip 2)",
            self.clip_skip,
        )
        need(
            isinstance(self.s_max, int) and self.s_max >= self.s_min,
            "s_max",
            f"an integer >= s_min ({self.s_min})",
            self.s_max,
        )
        need(bool(self.controlnet), "controlnet", "at least one ControlNet type, or none", self.controlnet)
        need(
            NO_CONTROLNET not in self.controlnet or self.controlnet == (NO_CONTROLNET,),
            "controlnet",
            "none alone (no ControlNet), or ControlNet types",
            list(self.controlnet),
        )
        for c in self.controlnet_types:
            kind, colon, weights = c.partition(":")
            need(
                kind in CONTROLNET_TYPES and (not colon or bool(weights.strip())),
                "controlnet",
                f"a type among {sorted(CONTROLNET_TYPES)}, optionally with weights as TYPE:ID_OR_PATH",
                c,
            )
        for v in self.controlnet_scale:
            need(
                v >= 0,
                "controlnet_scale",
                "numbers >= 0 (1.0: the ControlNet's full effect)",
                list(self.controlnet_scale),
            )
        need(
            len(self.controlnet_scale) in (1, len(self.controlnet_types)),
            "controlnet_scale",
            f"one value or {len(self.controlnet_types)} (one per ControlNet)",
            list(self.controlnet_scale),
        )
        need(
            0 <= self.canny_low <= self.canny_high <= 255,
            "canny_low/canny_high",
            "0 <= low <= high <= 255",
            (self.canny_low, self.canny_high),
        )
        need(
            0.0 <= self.background_smoothing <= 1.0,
            "background_smoothing",
            "a weight in [0, 1] (0: off)",
            self.background_smoothing,
        )
        need(
            self.background_smoothing == 0 or bool(self.foreground_masks),
            "foreground_masks",
            "a folder of masks NNNN.png (white = foreground) when background_smoothing > 0",
            self.foreground_masks,
        )
        for k in self.keyframe_prompts:
            need(_prompt_key(k) is not None, "keyframe_prompts", "frame indices (12) or times ('2.5s') as keys", k)
        from .flow import check_flow_name  # cv2 and torch: imported when a run is checked, not for --help

        check_flow_name(self.flow)
        self.fresco.validate()
        self.propagation_config()
        return self

    def propagation_config(self):
        """``propagation_options`` as a validated ``PropagationConfig``; an error names the option."""
        return propagation_config(self.propagation_options)

    def _check_types(self, need) -> None:
        """Types first, so that a YAML string like "0.5" or "false" is named as such instead of failing later."""

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def path(v) -> bool:
            return isinstance(v, (str, os.PathLike))

        for name in ("strength", "guidance_scale", "background_smoothing"):
            need(number(getattr(self, name)), name, "a number", getattr(self, name))
        integers = ("steps", "seed", "resolution", "batch_size", "s_min", "s_max", "canny_low", "canny_high")
        integers += ("clip_skip",)
        for name in integers:
            need(integer(getattr(self, name)), name, "an integer", getattr(self, name))
        need(
            isinstance(self.freeu, bool)
            or (
                isinstance(self.freeu, tuple)
                and len(self.freeu) == 4
                and all(number(v) and np.isfinite(v) and v >= 0 for v in self.freeu)
            ),
            "freeu",
            "true, false, or four numbers >= 0 [b1, b2, s1, s2] (e.g. [1.2, 1.4, 0.9, 0.2])",
            self.freeu,
        )
        for name in ("propagation", "colorize", "allow_pickle", "shared_step_noise"):
            need(isinstance(getattr(self, name), bool), name, "true or false (unquoted in YAML)", getattr(self, name))
        for name in ("prompt", "model", "negative_prompt", "added_prompt", "flow", "device", "dtype"):
            need(isinstance(getattr(self, name), str), name, "a text", getattr(self, name))
        for name in ("depth_estimator", "hed_annotator"):
            v = getattr(self, name)
            need(path(v) and bool(str(v).strip()), name, "a hub id, folder or file", v)
        need(path(self.input), "input", "a video file path", self.input)
        need(path(self.output), "output", "a folder path", self.output)
        vae_ok = self.vae is None or (path(self.vae) and bool(str(self.vae).strip()))
        need(vae_ok, "vae", "a hub id, folder or file", self.vae)
        need(
            self.foreground_masks is None or path(self.foreground_masks),
            "foreground_masks",
            "a folder path",
            self.foreground_masks,
        )
        for name in ("lora", "controlnet"):
            v = getattr(self, name)
            need(isinstance(v, tuple) and all(isinstance(x, str) for x in v), name, "a list of texts", v)
        need(
            isinstance(self.controlnet_scale, tuple) and all(number(x) for x in self.controlnet_scale),
            "controlnet_scale",
            "a number or a list of numbers",
            self.controlnet_scale,
        )
        need(
            isinstance(self.keyframe_prompts, dict) and all(isinstance(v, str) for v in self.keyframe_prompts.values()),
            "keyframe_prompts",
            "a mapping of frame index or time to prompt text",
            self.keyframe_prompts,
        )

    def to_dict(self) -> dict:
        d = to_dict(self)
        d["keyframe_prompts"] = {str(k): v for k, v in self.keyframe_prompts.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """From plain data (YAML / run.json); unknown fields are an error that names them."""
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("config", names_expected(unknown, known), unknown)
        fr = data.pop("fresco", None) or {}
        sections = {"attention": AttentionConfig, "optimization": OptimizationConfig, "reference": ReferenceConfig}
        bad = sorted(set(fr) - set(sections))
        if bad:
            raise ConfigError("fresco", names_expected(bad, sections, "sections"), bad)
        parts = {}
        for name, kind in sections.items():
            given = dict(fr.get(name) or {})
            allowed = {f.name for f in fields(kind)}
            if set(given) - allowed:
                bad = sorted(set(given) - allowed)
                raise ConfigError(f"fresco.{name}", names_expected(bad, allowed), bad)
            try:
                parts[name] = kind(
                    **{
                        k: (StepWindow(**v) if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v)
                        for k, v in given.items()
                    }
                )
            except TypeError as e:
                raise ConfigError(f"fresco.{name}", "values of the documented types", str(e)) from None
        fresco = FrescoConfig(parts["attention"], parts["optimization"], parts["reference"])
        if isinstance(data.get("freeu"), list):
            data["freeu"] = tuple(data["freeu"])
        for k in ("lora", "controlnet", "controlnet_scale"):
            if k in data and isinstance(data[k], (list, str, float, int)):
                v = data[k]
                data[k] = tuple(v) if isinstance(v, list) else (v,)
        if "keyframe_prompts" in data:
            data["keyframe_prompts"] = {
                _prompt_key(k) if _prompt_key(k) is not None else k: v
                for k, v in (data["keyframe_prompts"] or {}).items()
            }
        return cls(fresco=fresco, **data)


def propagation_config(options: dict, name: str = "propagation_options"):
    """``fresco_v2v.propagate.PropagationConfig`` from options by field name; an error names ``name``.option.

    The flow backend is checked too, so that a misspelt one fails now and not after hours of translation.
    """
    from .flow import check_flow_name
    from .propagate import PropagationConfig  # torch: imported when a run is checked, not for --help

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(name, "a mapping of PropagationConfig names to values", options)
    known = PropagationConfig.field_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(name, names_expected(unknown, known), unknown)
    try:
        cfg = PropagationConfig(**options)
    except ConfigError as e:
        raise ConfigError(f"{name}.{e.field}", e.expected, e.given) from None
    check_flow_name(cfg.flow, f"{name}.flow")
    return cfg


def _prompt_key(key) -> int | str | None:
    """A keyframe-prompt key: a frame index (int or digits) or a time like '2.5s'."""
    if isinstance(key, int) and key >= 0:
        return key
    if isinstance(key, str):
        s = key.strip()
        if s.isdigit():
            return int(s)
        if s.endswith("s"):
            try:
                if float(s[:-1]) >= 0:
                    return s
            except ValueError:
                return None
    return None


def prompt_for_frame(
    base: str, added: str, keyframe_prompts: dict, frame: int, fps: float, frame_seconds: list[float] | None = None
) -> str:
    """The prompt of one keyframe: base, the extra text of the last keyframe-prompt entry at or before the frame,
    then the added text (all joined by commas). A time key ("2.5s") names the frame nearest that time: by
    ``frame_seconds`` (each frame's timestamp, for a variable-rate clip) when given, else by ``fps``."""
    entries = []
    for key, text in keyframe_prompts.items():
        k = _prompt_key(key)
        if k is None:
            raise ConfigError("keyframe_prompts", "frame indices (12) or times ('2.5s') as keys", key)
        if isinstance(k, int):
            start = k
        elif frame_seconds is not None:
            t = float(k[:-1])
            # past the last frame's period: no frame (as round(t * fps) past the end is none at a constant rate)
            past_end = t >= frame_seconds[-1] + 0.5 / fps
            start = len(frame_seconds) if past_end else int(np.abs(np.asarray(frame_seconds) - t).argmin())
        else:
            start = round(float(k[:-1]) * fps)
        entries.append((start, text))
    extra = [t for s, t in sorted(entries, key=lambda e: e[0]) if s <= frame][-1:]
    return ", ".join(p for p in (base, *extra, added) if p)
