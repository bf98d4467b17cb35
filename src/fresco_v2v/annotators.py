"""ControlNet condition annotators that need weights: HED soft edges and MiDaS depth (the authors' other conditions).

Both give what :func:`~fresco_v2v.control.canny_condition` gives: ``[N, H, W, 3]`` uint8 RGB frames in,
``[N, 3, H, W]`` float32 condition images in [0, 1] on the CPU out, ready for a ControlNet.

- HED: :class:`ControlNetHED` is the soft-edge network of ControlNet 1.1's HED annotator, laid out so that the
  ``ControlNetHED.pth`` of the hub repo ``lllyasviel/Annotators`` loads into it with ``strict=True``
  (:func:`load_hed`); :func:`hed_condition` turns frames into edge maps.
- Depth: transformers' ``DPTForDepthEstimation`` (e.g. ``Intel/dpt-hybrid-midas``, MiDaS v3 DPT-hybrid), loaded by
  :func:`load_depth_estimator`; :func:`depth_condition` does the preprocessing in torch and normalises the relative
  inverse depth to [0, 1] (near is bright, as ControlNet-depth expects).

Loading follows :mod:`fresco_v2v.models`: pickle files need ``allow_pickle``, an unreachable hub means the local
cache only, and failures are a :class:`~fresco_v2v.errors.ModelNotFound` naming what to pass instead.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import models
from .control import CANNY_HIGH, CANNY_LOW, canny_condition
from .errors import ConfigError, ModelNotFound

logger = logging.getLogger(__name__)

#: Hub repo and file name of ControlNet 1.1's HED annotator weights.
HED_REPO = "lllyasviel/Annotators"
HED_FILENAME = "ControlNetHED.pth"
#: (in channels, out channels, 3x3 convs) of the five HED blocks; blocks 2-5 first halve the resolution.
HED_BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))
#: The MiDaS depth model the authors use with ControlNet-depth.
DEFAULT_DEPTH = "Intel/dpt-hybrid-midas"
#: DPT's token grid is built from 16-pixel patches and fused over 2x steps: input sides are multiples of 32.
DPT_MULTIPLE = 32


def _frames_uint8(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """A list or array of RGB frames -> [N, H, W, 3] uint8 CPU tensor (no copy for a contiguous uint8 array)."""
    arr = np.stack([np.asarray(f) for f in frames]) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0 or arr.dtype != np.uint8:
        raise ConfigError("frames", "[N, H, W, 3] uint8 RGB frames (N >= 1)", f"{arr.dtype} array {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ConfigError("chunk_size", "a positive number of frames", chunk_size)


def _param(model: nn.Module) -> torch.Tensor:
    """A parameter of ``model``: where its device and dtype are read from."""
    return next(model.parameters())


# ---------------------------------------------------------------------------------------------------------------- HED


class _HEDBlock(nn.Module):
    """``n`` 3x3 convs, each followed by a ReLU, and a 1x1 projection of their output to one side-edge channel."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        # ReLUs are applied in forward, so the Sequential holds only the convs: keys convs.0, convs.1, ...
        self.convs = nn.Sequential(*(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1) for i in range(n)))
        self.projection = nn.Conv2d(c_out, 1, 1)

    def forward(self, x: torch.Tensor, downsample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, c_in, h, w] -> features [N, c_out, h', w'] and side map [N, 1, h', w'] (h' = h // 2 if downsample)."""
        h = F.max_pool2d(x, kernel_size=2, stride=2) if downsample else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """ControlNet 1.1's HED soft-edge network: five VGG-like blocks, each giving a side edge map (logits).

    Its parameter names are those of ``ControlNetHED.pth``: ``norm`` (the per-channel value subtracted from the
    0..255 input) and ``block{1..5}.convs.{i}.weight/bias``, ``block{1..5}.projection.weight/bias``.
    """

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (c_in, c_out, n) in enumerate(HED_BLOCKS, start=1):
            self.add_module(f"block{i}", _HEDBlock(c_in, c_out, n))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, 3, H, W] RGB in 0..255 -> five side maps [N, 1, H_i, W_i], H_1 = H, H_{i+1} = H_i // 2 (logits)."""
        h = x - self.norm
        sides = []
        for i in range(1, len(HED_BLOCKS) + 1):
            h, side = getattr(self, f"block{i}")(h, downsample=i > 1)
            sides.append(side)
        return sides


def hed_condition(frames: list[np.ndarray] | np.ndarray, net: ControlNetHED, chunk_size: int = 4) -> torch.Tensor:
    """[N, H, W, 3] uint8 RGB -> [N, 3, H, W] float32 in [0, 1]: HED soft edges, white on black.

    As ControlNet's annotator: the side maps are resized (bilinear) to the frame, averaged, passed through a sigmoid
    and quantised to 8 bits (truncated, as its ``astype(np.uint8)``). ``chunk_size`` frames go through ``net`` at a
    time (on its device, in its dtype) to bound memory.
    """
    _check_chunk(chunk_size)
    x = _frames_uint8(frames)  # [N, H, W, 3]
    size = tuple(x.shape[1:3])
    p = _param(net)
    out = []
    with torch.inference_mode():
        for chunk in x.split(chunk_size):
            img = chunk.to(p.device).permute(0, 3, 1, 2).to(p.dtype)  # [n, 3, H, W] in 0..255
            sides = [F.interpolate(s.float(), size=size, mode="bilinear", align_corners=False) for s in net(img)]
            edge = torch.sigmoid(torch.stack(sides).mean(0))  # [n, 1, H, W]
            out.append(edge.mul(255.0).clamp(0, 255).floor().div(255.0).cpu())
    return torch.cat(out).expand(-1, 3, -1, -1).contiguous()


def _local_hed_file(path: Path, allow_pickle: bool) -> Path:
    """The weights file named by ``path`` (the file itself, or ControlNetHED.safetensors / .pth in a folder), after
    the pickle gate."""
    if path.is_dir():
        stem = Path(HED_FILENAME).stem
        found = [path / f"{stem}{s}" for s in (".safetensors", ".pth") if (path / f"{stem}{s}").is_file()]
        if not found:
            raise FileNotFoundError(f"no {stem}.safetensors or {HED_FILENAME} in {path}")
        path = found[0]
    models._check_single_file(path, allow_pickle, "hed")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs


def load_hed(ident: str = HED_REPO, allow_pickle: bool = False) -> ControlNetHED:
    """ControlNet 1.1's HED annotator (:class:`ControlNetHED`, eval mode, float32 on the CPU) from a hub repo id
    (``lllyasviel/Annotators``: its ``ControlNetHED.pth``), a folder holding that file, or a single file.

    ``.pth`` files are pickles: they need ``allow_pickle=True`` (a :class:`ConfigError` otherwise, before any
    download); ``.safetensors`` loads without it. A state dict that does not fit the network is a
    :class:`ModelNotFound` naming the file and the first missing and unexpected keys.
    """
    path = Path(ident)
    from_hub = path.suffix.lower() not in models.SINGLE_FILE_SUFFIXES and not path.is_dir()
    cache_only = False
    try:
        if from_hub:
            models._check_single_file(Path(HED_FILENAME), allow_pickle, "hed")  # the hub file is a pickle
            from huggingface_hub import hf_hub_download

            cache_only = models.use_local_cache_only(ident)
            path = Path(hf_hub_download(ident, HED_FILENAME, local_files_only=cache_only))
        else:
            path = _local_hed_file(path, allow_pickle)
        state = _read_state_dict(path)
    except ConfigError:
        raise
    except Exception as e:  # OSError, hub errors, unpickling errors, safetensors errors
        raise models._not_found("HED annotator", ident, e, cache_only) from e
    net = ControlNetHED()
    if not isinstance(state, dict):
        raise ModelNotFound(f"HED annotator weights {path}: expected a state dict, got {type(state).__name__}")
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelNotFound(
            f"HED annotator weights {path} do not fit ControlNet 1.1's HED network: "
            f"{len(missing)} missing keys (first: {missing[:5]}), {len(unexpected)} unexpected keys "
            f"(first: {unexpected[:5]}). Pass lllyasviel/Annotators' {HED_FILENAME} (or its .safetensors conversion)."
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # same keys, other shapes
        raise ModelNotFound(f"HED annotator weights {path} do not fit: {str(e).strip()[:500]}") from e
    logger.info("loaded the HED annotator from %s", path)
    return net.eval()


# -------------------------------------------------------------------------------------------------------------- depth


def load_depth_estimator(ident: str = DEFAULT_DEPTH, allow_pickle: bool = False):
    """A transformers ``DPTForDepthEstimation`` (eval mode) from a hub id or a local folder (``save_pretrained``).

    Weights must be .safetensors unless ``allow_pickle`` (a folder with pickle-only weights is a
    :class:`ConfigError`; a hub repo without .safetensors a :class:`ModelNotFound`).
    """
    from transformers import DPTForDepthEstimation

    loader = DPTForDepthEstimation.from_pretrained
    model = models.load_transformers(loader, ident, "depth estimator", "depth_estimator", allow_pickle=allow_pickle)
    logger.info("loaded the depth estimator %s", ident)
    return model.eval()


def _dpt_side(config, size: int | None) -> int:
    """The side of DPT's square input. transformers' DPT reassembles its tokens into a square grid, and the hybrid
    (ResNet + ViT) embeddings take only their training size, so the input is resized to a square whatever the frame's
    aspect ratio (as the DPT image processor of ``Intel/dpt-hybrid-midas`` does: 384x384)."""
    trained = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    if getattr(config, "is_hybrid", False):
        if size is not None and size != trained:
            raise ConfigError("depth size", f"{trained}: a DPT-hybrid model takes only its training size", size)
        return trained
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    step = math.lcm(DPT_MULTIPLE, patch)
    return max(step, round((trained if size is None else size) / step) * step)


def _min_max(depth: torch.Tensor, rel_eps: float = 1e-4) -> torch.Tensor:
    """[n, H, W] -> per-frame (d - min) / (max - min), in [0, 1]. A map whose range is below ``rel_eps`` of its
    magnitude is flat (a constant, up to resampling noise): zeros, not NaN or amplified noise."""
    lo = depth.amin(dim=(1, 2), keepdim=True)
    hi = depth.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    flat = span <= rel_eps * torch.maximum(lo.abs(), hi.abs())  # [n, 1, 1]; also true for an all-zero map
    return torch.where(flat, 0.0, (depth - lo) / torch.where(flat, 1.0, span)).clamp(0, 1)


def depth_condition(
    frames: list[np.ndarray] | np.ndarray, model, size: int | None = None, chunk_size: int = 4
) -> torch.Tensor:
    """[N, H, W, 3] uint8 RGB -> [N, 3, H, W] float32 in [0, 1]: MiDaS relative inverse depth, near is bright.

    Preprocessing as the DPT image processor's: [0, 1] RGB resized (bicubic) to a ``side`` x ``side`` square and
    normalised with mean 0.5, std 0.5. ``size``: that side (rounded to a multiple of 32; None: the model's training
    size, 384 for DPT-hybrid MiDaS, which takes only that). The prediction is resized (bicubic) back to H x W and
    min-max normalised per frame. ``chunk_size`` frames go through ``model`` at a time, on its device and dtype.
    """
    _check_chunk(chunk_size)
    x = _frames_uint8(frames)  # [N, H, W, 3]
    frame_size = tuple(x.shape[1:3])
    side = _dpt_side(model.config, size)
    p = _param(model)
    out = []
    with torch.inference_mode():
        for chunk in x.split(chunk_size):
            rgb = chunk.to(p.device).permute(0, 3, 1, 2).float().div(255.0)  # [n, 3, H, W] in [0, 1]
            rgb = F.interpolate(rgb, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
            depth = model(pixel_values=rgb.sub(0.5).div(0.5).to(p.dtype)).predicted_depth  # [n, h, w]
            depth = F.interpolate(depth[:, None].float(), size=frame_size, mode="bicubic", align_corners=False)
            out.append(_min_max(depth[:, 0]).cpu())  # [n, H, W]
    return torch.cat(out)[:, None].expand(-1, 3, -1, -1).contiguous()


def load_condition_annotators(
    types: tuple[str, ...],
    *,
    depth_estimator: str,
    hed_annotator: str,
    allow_pickle: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, torch.nn.Module]:
    """The weights each ControlNet type's condition needs, loaded once per run: depth (a DPT depth estimator),
    hed (the ControlNet HED network); canny needs none."""
    kinds = {t.partition(":")[0] for t in types}
    loaded: dict[str, torch.nn.Module] = {}
    if "depth" in kinds:
        loaded["depth"] = load_depth_estimator(depth_estimator, allow_pickle).to(device)
    if "hed" in kinds:
        loaded["hed"] = load_hed(hed_annotator, allow_pickle).to(device)
    return loaded


def condition_images(
    types: tuple[str, ...],
    frames: np.ndarray,
    annotators: dict[str, torch.nn.Module],
    canny_low: int = CANNY_LOW,
    canny_high: int = CANNY_HIGH,
) -> list[torch.Tensor]:
    """One ``[N, 3, H, W]`` condition per ControlNet type ("TYPE" or "TYPE:WEIGHTS"), each from its own annotator;
    a type listed twice is computed once."""
    made: dict[str, torch.Tensor] = {}
    for kind in dict.fromkeys(t.partition(":")[0] for t in types):
        if kind == "canny":
            made[kind] = canny_condition(frames, canny_low, canny_high)
        elif kind in ("depth", "hed") and kind in annotators:
            made[kind] = (depth_condition if kind == "depth" else hed_condition)(frames, annotators[kind])
        else:
            raise ConfigError("controlnet", "canny, depth or hed, with its annotator loaded", kind)
    return [made[t.partition(":")[0]] for t in types]
