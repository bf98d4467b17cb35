"""The evaluation metrics of the paper's Table 1 (§4.1): Fram-Acc, Tem-Con, Pixel-MSE and Spat-Con.

Each metric compares an INPUT video with its translated OUTPUT video of the same frame count and size:

- **Pixel-MSE** (lower is better): mean squared error between consecutive output frames after aligning them with
  the optical flow of the input video, on the pixels that the flow says are visible in both; pixel values in
  [0, 1]. Exact rule in :func:`aligned_pixel_mse`. Needs no weights.
- **Tem-Con** (the paper also writes Tmp-Con; higher is better): mean cosine similarity of the CLIP image
  embeddings of consecutive output frames (:func:`temporal_consistency`).
- **Fram-Acc** (higher is better): fraction of output frames whose CLIP image embedding is closer (cosine) to the
  target prompt than to the source prompt, a caption of the input video (:func:`frame_accuracy`).
- **Spat-Con** (lower is better): eq. 6's L_spat (without λ_spat) between the features of each input frame and of
  its output frame in a pretrained image network (:func:`spatial_consistency`), averaged over frames.

**Spat-Con's network differs from the paper's.** The paper takes VGG features; torchvision (where VGG lives) is
not a dependency of fresco-v2v, so the features are hidden states of a transformers vision model. Default: the
vision tower of the CLIP model that Tem-Con and Fram-Acc already load (one download, nothing extra on disk), its
hidden state at half its depth (:data:`DEFAULT_FEATURE_DEPTH`: mid-level ViT tokens keep layout and part
structure, the final layers are mostly semantic), patch tokens only (class/register tokens dropped) laid out on
their grid. CLIP ViT-L/14 at 224 px gives a 16 x 16 token grid: coarser than VGG's convolutional maps, so absolute
values are not comparable with Table 1; rankings of methods evaluated with the same network are. Any other
transformers vision model (ViT, DINOv2, ConvNeXt, ResNet, ...) can be named instead (``feature_model``).

CLIP and the feature network are loaded with transformers from a hub id or a local folder, through
:func:`fresco_v2v.models.load_transformers` (the loaders' one offline policy, pickle gate and error style; weights
must be .safetensors unless ``allow_pickle``). When a model cannot be
loaded (offline, no weights, not a CLIP model), its metrics are reported in ``EvaluationResult.unavailable`` with
the reason, and the other metrics still run.

The paper's absolute Pixel-MSE also depends on the flow (GMFlow there, OpenCV DIS by default here, see
:mod:`fresco_v2v.flow`) and on the resolution of the videos; compare methods under the same settings.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, InputError, ModelNotFound
from .flow import FlowEstimator, get_flow_estimator, sequence_flows, warp
from .losses import gram_distance, normalize_tokens
from .models import load_transformers, use_local_cache_only

logger = logging.getLogger(__name__)

#: The metric keys, in the order of the paper's Table 1, and their names there.
METRICS = ("fram_acc", "tem_con", "pixel_mse", "spat_con")
METRIC_NAMES = {"fram_acc": "Fram-Acc", "tem_con": "Tem-Con", "pixel_mse": "Pixel-MSE", "spat_con": "Spat-Con"}
#: Whether a larger value is better (Table 1's arrows).
HIGHER_IS_BETTER = {"fram_acc": True, "tem_con": True, "pixel_mse": False, "spat_con": False}

#: A common CLIP for CLIP-based video editing scores; named in messages, never downloaded unless asked for.
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
#: Spat-Con reads the feature network's hidden state at this fraction of its depth (a documented choice, see above).
DEFAULT_FEATURE_DEPTH = 0.5
#: OpenAI CLIP's normalization, used when a model folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Frames per forward pass of the networks, and per call of the flow (memory stays bounded on long videos).
DEFAULT_BATCH_SIZE = 16

#: progress(stage, done, total): called as work advances; the CLI turns it into progress bars.
Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------------------------
# Pure tensor functions
# ---------------------------------------------------------------------------------------------------------------


def aligned_pixel_mse(output: torch.Tensor, flow_bwd: torch.Tensor, occ_bwd: torch.Tensor) -> torch.Tensor:
    """Pixel-MSE of each pair of consecutive frames (paper §4.1), the output aligned by the INPUT video's flow.

    output: [T, 3, H, W] output frames, values in [0, 1]. flow_bwd: [T-1, H, W, 2], the input video's flow from
    frame t+1 to frame t (``sequence_flows(input).bwd``: input_{t+1}(x) ~ input_t(x + flow_bwd[t](x))).
    occ_bwd: [T-1, H, W] bool, the pixels of input frame t+1 with no match in frame t
    (``sequence_flows(input).occ_bwd``: forward-backward check failed, x + flow leaves the frame, or the input pair's
    mean |RGB difference| after warping exceeds 0.25 * 255; see :func:`fresco_v2v.flow.occlusion_from_flows`).

    Alignment: output frame t is backward-warped onto frame t+1's grid, ô_t(x) = output_t(x + flow_bwd[t](x))
    (bilinear, border-clamped; the same w_i^{i+1} as eq. 5). Returns [T-1]: the mean over the RGB channels and
    over the visible (non-occluded) pixels of frame t+1 of (output_{t+1} - ô_t)², NaN for a pair with no visible
    pixel.
    """
    if output.shape[0] < 2:
        return output.new_zeros(0)
    aligned = warp(output[:-1], flow_bwd)  # [T-1, 3, H, W] frame t on frame t+1's grid
    sq = (output[1:] - aligned).pow(2).mean(dim=1)  # [T-1, H, W]
    visible = (~occ_bwd).to(sq.dtype)  # [T-1, H, W]
    count = visible.sum(dim=(1, 2))  # [T-1]
    total = (sq * visible).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def temporal_consistency(embeddings: torch.Tensor) -> torch.Tensor:
    """Tem-Con: mean cosine similarity of consecutive frames' embeddings; embeddings: [T, D], T >= 2. Scalar."""
    e = F.normalize(embeddings.float(), dim=-1)  # [T, D]
    return (e[:-1] * e[1:]).sum(dim=-1).mean()


def frame_accuracy(embeddings: torch.Tensor, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Fram-Acc: fraction of frames whose embedding is strictly closer (cosine) to ``target`` than to ``source``.

    embeddings: [T, D] image embeddings; target, source: [D] text embeddings of the target prompt and of the
    source prompt (a caption of the input). A tie counts as a miss. Returns a scalar in [0, 1].
    """
    e = F.normalize(embeddings.float(), dim=-1)  # [T, D]
    texts = F.normalize(torch.stack([target, source]).float().to(e.device), dim=-1)  # [2, D]
    sims = e @ texts.T  # [T, 2]
    return (sims[:, 0] > sims[:, 1]).float().mean()


def spatial_consistency(features: torch.Tensor, ref_features: torch.Tensor) -> torch.Tensor:
    """Spat-Con per frame: eq. 6's L_spat without λ_spat, ||f~ f~ᵀ - f~ʳ f~ʳᵀ||² / L², f~ the unit-norm tokens.

    features: [N, C, h, w] of the output frames; ref_features: [N, C, h, w] of the input frames (f^r). The mean over
    the L x L Gram entries (L = h * w), as :func:`fresco_v2v.losses.spatial_consistency_loss` of one frame; built
    with its O(L C²) Gram identity. Returns [N].
    """
    a, b = normalize_tokens(features.float()), normalize_tokens(ref_features.float())  # [N, L, C]
    l = a.shape[1]
    return gram_distance(a, b) / (l * l)


def token_map(hidden: torch.Tensor) -> torch.Tensor:
    """A hidden state as a feature map [N, C, h, w].

    hidden: [N, C, h, w] (convolutional networks: returned as is) or [N, L, C] tokens of a square grid preceded by
    L - h*w class/register tokens (ViT-style networks: those are dropped, the last h*w tokens are the patches in
    row-major order).
    """
    if hidden.ndim == 4:
        return hidden
    if hidden.ndim != 3:
        raise ValueError(f"hidden state: expected [N, C, h, w] or [N, L, C], got {tuple(hidden.shape)}")
    n, l, c = hidden.shape
    side = math.isqrt(l)  # the largest square grid that fits; the rest are the leading prefix tokens
    patches = hidden[:, l - side * side :]  # [N, h*w, C]
    return patches.transpose(1, 2).reshape(n, c, side, side)


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[T, H, W, 3] uint8 RGB -> [T, 3, size, size] normalized network input.

    ``crop=True`` is CLIP's preprocessing: the short side resized to ``size`` (bicubic, antialiased), a centred
    square crop. ``crop=False`` resizes the whole frame to size x size (aspect not kept, nothing cut away), which
    Spat-Con uses so that every pixel of the frame is compared; input and output frames get the same treatment.
    """
    x = torch.as_tensor(np.asarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
    h, w = x.shape[-2:]
    if crop:
        scale = size / min(h, w)
        rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    else:
        rh, rw = size, size
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (rh - size) // 2, (rw - size) // 2
    x = x[:, :, top : top + size, left : left + size]  # [T, 3, size, size]
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def _preprocessor_stats(name: str, default_size: int) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(size, mean, std) from the model's preprocessor_config.json when it has one, else CLIP's constants."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            name,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            local_files_only=use_local_cache_only(name),
        )
    except Exception:  # the weights loaded; a missing preprocessing file only means the defaults apply
        path = None
    if not path:
        return default_size, CLIP_MEAN, CLIP_STD
    cfg = json.loads(Path(path).read_text())
    crop = cfg.get("crop_size")
    size = crop.get("height", default_size) if isinstance(crop, dict) else (crop or default_size)
    return int(size), tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))


def _as_tensor(out: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding; 4.x a tensor.
    return out if torch.is_tensor(out) else out.pooler_output


@dataclass
class ClipScorer:
    """A loaded CLIP (image and text towers) and how to feed it; build with :func:`load_clip`."""

    model: Any  # transformers model with get_image_features / get_text_features
    tokenizer: Any | None  # None when it could not be loaded: Fram-Acc is then unavailable
    name: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    dtype: torch.dtype
    tokenizer_error: str | None = None

    @torch.inference_mode()
    def image_embeddings(self, frames: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """[T, H, W, 3] uint8 -> [T, D] float32 unit-norm CLIP image embeddings (CLIP preprocessing, centre crop)."""
        out = []
        for s in range(0, len(frames), batch_size):
            batch = frames[s : s + batch_size]
            x = preprocess_frames(batch, self.size, self.mean, self.std, device=self.device, dtype=self.dtype)
            out.append(_as_tensor(self.model.get_image_features(pixel_values=x)).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """K texts -> [K, D] float32 unit-norm CLIP text embeddings (truncated to the text tower's length)."""
        if self.tokenizer is None:
            raise ModelNotFound(self.tokenizer_error or f"CLIP {self.name!r}: no tokenizer")
        limit = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", 77)
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_as_tensor(self.model.get_text_features(**tok)).float(), dim=-1)


@dataclass
class FeatureNetwork:
    """A pretrained vision network whose hidden state at ``depth`` gives Spat-Con's features."""

    module: Any  # called as module(pixel_values=..., output_hidden_states=True)
    name: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    depth: float
    device: torch.device
    dtype: torch.dtype

    @torch.inference_mode()
    def features(self, frames: np.ndarray) -> torch.Tensor:
        """[N, H, W, 3] uint8 -> [N, C, h, w] float32: the hidden state at ``depth`` of the whole (squashed) frame."""
        x = preprocess_frames(frames, self.size, self.mean, self.std, crop=False, device=self.device, dtype=self.dtype)
        states = self.module(pixel_values=x, output_hidden_states=True).hidden_states  # embeddings + every layer
        index = max(1, min(len(states) - 1, round(self.depth * (len(states) - 1))))
        return token_map(states[index]).float()


def _check_depth(depth: float) -> None:
    if not isinstance(depth, (int, float)) or not 0 < depth <= 1:
        raise ConfigError("feature_depth", "a fraction of the network's depth in (0, 1]", depth)


def load_clip(
    name: str = DEFAULT_CLIP_MODEL,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> ClipScorer:
    """Load a CLIP-style model (and its tokenizer) with transformers from a hub id or a local folder.

    Raises :class:`ModelNotFound` with the reason when the model cannot be loaded or is not an image-text model.
    A missing tokenizer only disables Fram-Acc (``ClipScorer.tokenizer_error`` says why).
    """
    from transformers import AutoModel, AutoTokenizer

    loader = AutoModel.from_pretrained
    model = load_transformers(loader, name, "CLIP model", "clip_model", allow_pickle=allow_pickle, dtype=dtype)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelNotFound(f"CLIP model {name!r} is a {model.config.model_type!r} model, not an image-text model")
    model = model.to(device).eval()
    tokenizer, tokenizer_error = None, None
    try:
        loader = AutoTokenizer.from_pretrained
        tokenizer = load_transformers(loader, name, "CLIP tokenizer", "clip_model", weights=False)
    except ModelNotFound as e:
        tokenizer_error = str(e)
    vision = getattr(model.config, "vision_config", model.config)
    size, mean, std = _preprocessor_stats(name, int(getattr(vision, "image_size", 224)))
    logger.info("loaded CLIP %s (%d px, %s, %s)", name, size, device, dtype)
    return ClipScorer(model, tokenizer, name, size, mean, std, torch.device(device), dtype, tokenizer_error)


def feature_network_from_clip(clip: ClipScorer, depth: float = DEFAULT_FEATURE_DEPTH) -> FeatureNetwork:
    """Spat-Con's default network: the vision tower of an already loaded CLIP (see the module docstring)."""
    _check_depth(depth)
    tower = getattr(clip.model, "vision_model", None)
    if tower is None:
        raise ModelNotFound(f"CLIP model {clip.name!r} has no vision_model to take Spat-Con features from")
    name = f"{clip.name} (vision tower)"
    return FeatureNetwork(tower, name, clip.size, clip.mean, clip.std, depth, clip.device, clip.dtype)


def load_feature_network(
    name: str,
    *,
    depth: float = DEFAULT_FEATURE_DEPTH,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> FeatureNetwork:
    """Load any transformers vision model (a CLIP-style model's vision tower is used) as Spat-Con's network."""
    from transformers import AutoModel

    _check_depth(depth)
    loader = AutoModel.from_pretrained
    model = load_transformers(loader, name, "feature model", "feature_model", allow_pickle=allow_pickle, dtype=dtype)
    module = getattr(model, "vision_model", model).to(device).eval()
    cfg = getattr(model.config, "vision_config", model.config)
    size = getattr(cfg, "image_size", 224)
    size, mean, std = _preprocessor_stats(name, int(size[0] if isinstance(size, (list, tuple)) else size))
    return FeatureNetwork(module, name, size, mean, std, depth, torch.device(device), dtype)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation of a pair of videos
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """The four metrics of Table 1; a metric that could not be computed is None and its reason is in ``unavailable``."""

    pixel_mse: float | None
    tem_con: float | None
    fram_acc: float | None
    spat_con: float | None
    unavailable: dict[str, str] = field(default_factory=dict)
    num_frames: int = 0
    size: tuple[int, int] = (0, 0)  # (W, H)
    flow: str = ""  # the flow backend Pixel-MSE used
    clip_model: str | None = None
    feature_model: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The four metric keys (null when unavailable) and ``unavailable`` (metric -> reason)."""
        return {k: getattr(self, k) for k in ("pixel_mse", "tem_con", "fram_acc", "spat_con")} | {
            "unavailable": dict(self.unavailable)
        }


def pixel_mse_per_pair(
    input_frames: np.ndarray,
    output_frames: np.ndarray,
    estimator: FlowEstimator | None = None,
    chunk: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> torch.Tensor:
    """[T-1] Pixel-MSE of each consecutive pair (:func:`aligned_pixel_mse`); frames: [T, H, W, 3] uint8.

    The input video's flows and occlusion come from :func:`fresco_v2v.flow.sequence_flows` with its defaults,
    ``chunk`` frames at a time so memory does not grow with the video's length.
    """
    t = len(input_frames)
    out = []
    for s in range(0, max(t - 1, 0), chunk):
        e = min(s + chunk, t - 1)  # pairs s .. e-1 use frames s .. e
        flows = sequence_flows(input_frames[s : e + 1], estimator)
        frames = torch.from_numpy(np.ascontiguousarray(output_frames[s : e + 1])).permute(0, 3, 1, 2).float() / 255
        out.append(aligned_pixel_mse(frames, flows.bwd, flows.occ_bwd))
        if progress is not None:
            progress("Pixel-MSE", e, t - 1)
    return torch.cat(out) if out else torch.zeros(0)


def _as_frames(frames):
    """An array (or a list, as one), or a frame source kept as it is: len, [i] and [a:b] (a FrameReader)."""
    return np.asarray(frames) if isinstance(frames, (np.ndarray, list, tuple)) else frames


def _dtype_and_shape(frames) -> tuple[np.dtype, tuple[int, ...]]:
    if isinstance(frames, np.ndarray):
        return frames.dtype, frames.shape
    first = np.asarray(frames[0]) if len(frames) else np.zeros((0,))
    return first.dtype, (len(frames), *first.shape)


def _check_pair(input_frames, output_frames, names: tuple[str, str]) -> None:
    shapes = []
    for frames, name in zip((input_frames, output_frames), names):
        dtype, shape = _dtype_and_shape(frames)
        if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or shape[0] == 0:
            raise InputError(f"{name}: expected [T, H, W, 3] uint8 RGB frames, got {dtype} {shape}")
        shapes.append(shape)
    (ti, hi, wi), (to, ho, wo) = shapes[0][:3], shapes[1][:3]
    if ti != to:
        raise InputError(
            f"{names[0]} has {ti} frames but {names[1]} has {to}: the metrics compare frame t of one with frame t "
            "of the other, so both need the same frame count"
        )
    if (hi, wi) != (ho, wo):
        raise InputError(
            f"{names[0]} is {wi}x{hi} but {names[1]} is {wo}x{ho}: both need the same frame size "
            "(resize one, or read both at the same resolution)"
        )


def _pixel_mse_metric(
    input_frames: np.ndarray,
    output_frames: np.ndarray,
    estimator: FlowEstimator,
    batch_size: int,
    progress: Progress | None,
) -> tuple[float | None, str | None]:
    """(Pixel-MSE averaged over the pairs with a visible pixel, None) or (None, why it is unavailable)."""
    if len(input_frames) < 2:
        return None, "needs at least 2 frames"
    per_pair = pixel_mse_per_pair(input_frames, output_frames, estimator, batch_size, progress)  # [T-1]
    valid = per_pair[~per_pair.isnan()]
    if len(valid) == 0:
        return None, "every pixel is occluded between every pair of input frames"
    if len(valid) < len(per_pair):
        logger.info("Pixel-MSE: %d of %d pairs had no visible pixel", len(per_pair) - len(valid), len(per_pair))
    return float(valid.mean()), None


def _resolve_clip(
    clip_model: str | ClipScorer | None, device: torch.device | str, dtype: torch.dtype
) -> tuple[ClipScorer | None, str]:
    """(the CLIP to use, "") or (None, why CLIP metrics are unavailable)."""
    if isinstance(clip_model, ClipScorer):
        return clip_model, ""
    if clip_model is None:
        return (
            None,
            f"no CLIP model given: pass a hub id such as {DEFAULT_CLIP_MODEL} or a local folder (CLI: --clip-model)",
        )
    try:
        return load_clip(clip_model, device=device, dtype=dtype), ""
    except ModelNotFound as e:
        logger.info("CLIP metrics unavailable: %s", e)
        return None, str(e)


def _clip_metrics(
    clip: ClipScorer,
    output_frames: np.ndarray,
    prompt: str | None,
    source_prompt: str | None,
    batch_size: int,
    progress: Progress | None,
) -> tuple[tuple[float | None, float | None], dict[str, str]]:
    """((Tem-Con, Fram-Acc), reasons for the ones that are None)."""
    t = len(output_frames)
    emb = clip.image_embeddings(output_frames, batch_size)  # [T, D]
    if progress is not None:
        progress("CLIP", t, t)
    reasons: dict[str, str] = {}
    tem_con = fram_acc = None
    if t < 2:
        reasons["tem_con"] = "needs at least 2 frames"
    else:
        tem_con = float(temporal_consistency(emb))
    if prompt is None or source_prompt is None:
        reasons["fram_acc"] = (
            "needs the target prompt and a source prompt describing the input (CLI: --prompt, --source-prompt)"
        )
    elif clip.tokenizer is None:
        reasons["fram_acc"] = clip.tokenizer_error or "the CLIP model has no tokenizer"
    else:
        text = clip.text_embeddings([prompt, source_prompt])  # [2, D]
        fram_acc = float(frame_accuracy(emb, text[0], text[1]))
    return (tem_con, fram_acc), reasons


def _resolve_feature_network(
    feature_model: str | FeatureNetwork | None,
    depth: float,
    clip: ClipScorer | None,
    clip_model: str | ClipScorer | None,
    clip_reason: str,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[FeatureNetwork | None, str]:
    """(Spat-Con's network, "") or (None, why Spat-Con is unavailable)."""
    try:
        if isinstance(feature_model, FeatureNetwork):
            return feature_model, ""
        if feature_model is not None:
            return load_feature_network(feature_model, depth=depth, device=device, dtype=dtype), ""
        if clip is not None:
            return feature_network_from_clip(clip, depth), ""
    except ModelNotFound as e:
        logger.info("Spat-Con unavailable: %s", e)
        return None, str(e)
    if clip_model is None:
        return None, "its default network is the CLIP vision tower and no CLIP model was given (CLI: --clip-model)"
    return None, f"its default network is the CLIP vision tower: {clip_reason}"


def _spat_con_metric(
    net: FeatureNetwork,
    input_frames: np.ndarray,
    output_frames: np.ndarray,
    batch_size: int,
    progress: Progress | None,
) -> float:
    """Spat-Con averaged over the frames, ``batch_size`` frames per forward pass."""
    t, per_frame = len(input_frames), []
    for s in range(0, t, batch_size):
        f_out = net.features(output_frames[s : s + batch_size])  # [n, C, h, w]
        f_in = net.features(input_frames[s : s + batch_size])
        per_frame.append(spatial_consistency(f_out, f_in))  # [n]
        if progress is not None:
            progress("Spat-Con", min(s + batch_size, t), t)
    return float(torch.cat(per_frame).mean())


def evaluate_frames(
    input_frames: np.ndarray,
    output_frames: np.ndarray,
    *,
    prompt: str | None = None,
    source_prompt: str | None = None,
    clip_model: str | ClipScorer | None = None,
    feature_model: str | FeatureNetwork | None = None,
    feature_depth: float = DEFAULT_FEATURE_DEPTH,
    flow: str | FlowEstimator = "dis",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    names: tuple[str, str] = ("input", "output"),
) -> EvaluationResult:
    """All four metrics for an input video and its translation, both [T, H, W, 3] uint8 of the same shape (arrays,
    or frame sources read in chunks of ``batch_size``, such as :class:`~fresco_v2v.video.FrameReader`).

    ``clip_model``: a hub id, a local folder, an already loaded :class:`ClipScorer`, or None (Tem-Con, Fram-Acc and
    the default Spat-Con are then unavailable). ``feature_model``: Spat-Con's network (hub id, folder or loaded
    :class:`FeatureNetwork`); None uses the CLIP's vision tower at ``feature_depth``. ``prompt`` is the target
    prompt and ``source_prompt`` a caption of the input; Fram-Acc needs both. Raises :class:`InputError` for
    frames of different counts or sizes.
    """
    input_frames, output_frames = _as_frames(input_frames), _as_frames(output_frames)
    _check_pair(input_frames, output_frames, names)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", "a positive integer", batch_size)
    _check_depth(feature_depth)
    for fname, text in (("prompt", prompt), ("source_prompt", source_prompt)):
        if text is not None and not text.strip():
            raise ConfigError(fname, "a non-empty text or None", text)
    estimator = get_flow_estimator(flow) if isinstance(flow, str) else flow
    t = len(input_frames)
    values: dict[str, float | None] = dict.fromkeys(METRICS)
    unavailable: dict[str, str] = {}

    values["pixel_mse"], reason = _pixel_mse_metric(input_frames, output_frames, estimator, batch_size, progress)
    if reason:
        unavailable["pixel_mse"] = reason
    clip, clip_reason = _resolve_clip(clip_model, device, dtype)
    if clip is None:
        unavailable["tem_con"] = unavailable["fram_acc"] = clip_reason
    else:
        (values["tem_con"], values["fram_acc"]), reasons = _clip_metrics(
            clip, output_frames, prompt, source_prompt, batch_size, progress
        )
        unavailable.update(reasons)
    net, net_reason = _resolve_feature_network(
        feature_model, feature_depth, clip, clip_model, clip_reason, device, dtype
    )
    if net is None:
        unavailable["spat_con"] = net_reason
    else:
        values["spat_con"] = _spat_con_metric(net, input_frames, output_frames, batch_size, progress)

    return EvaluationResult(
        **values,
        unavailable=unavailable,
        num_frames=t,
        size=(int(_dtype_and_shape(input_frames)[1][2]), int(_dtype_and_shape(input_frames)[1][1])),
        flow=getattr(estimator, "name", type(estimator).__name__),
        clip_model=clip.name if clip is not None else (clip_model if isinstance(clip_model, str) else None),
        feature_model=net.name if net is not None else (feature_model if isinstance(feature_model, str) else None),
    )


def evaluate_videos(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    short_side: int | None = None,
    max_frames: int | None = None,
    **kwargs: Any,
) -> EvaluationResult:
    """:func:`evaluate_frames` on two video files.

    Both are decoded at their own size (``short_side=None``, nothing cropped) or with their short side resized to
    ``short_side`` (aspect kept, no crop to a multiple of 64); ``max_frames`` keeps the first frames of each.
    Frames are decoded as each metric reads them, a chunk at a time: memory does not grow with the videos' length.
    Keyword arguments go to :func:`evaluate_frames`.
    """
    from .video import FrameReader, scan_video

    infos = [scan_video(p, short_side=short_side, multiple=1, max_frames=max_frames) for p in (input_path, output_path)]
    cache = 2 * int(kwargs.get("batch_size", DEFAULT_BATCH_SIZE)) + 2
    with FrameReader(infos[0], cache) as a, FrameReader(infos[1], cache) as b:
        return evaluate_frames(a, b, names=(str(input_path), str(output_path)), **kwargs)
