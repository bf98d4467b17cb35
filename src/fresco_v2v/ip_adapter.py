"""A style reference image through IP-Adapter (Ye et al. 2023, arXiv 2308.06721), for SD1.5-family UNets.

IP-Adapter adds a second key/value projection to every cross-attention layer (``attn2``) for tokens made from a CLIP
image embedding ("decoupled cross-attention"); FRESCO replaces self-attention (``attn1``) only, so both act in one
UNet call. Loading here reads the weights and the image encoder once a run (:func:`load_adapter`); every pipeline
call installs them with diffusers' own ``load_ip_adapter`` (:func:`ip_adapter_installed`) before FRESCO installs its
processors, and restores the UNet exactly when the call ends: a pipeline that had one is the plain pipeline between
calls.

Weights layout (the original IP-Adapter's, which h94/IP-Adapter publishes and diffusers reads): ``image_proj``
``{proj.weight [4*C, D], proj.bias [4*C], norm.weight [C], norm.bias [C]}`` (one image embedding of width D -> 4 tokens
of the cross-attention width C) and ``ip_adapter`` ``{"K.to_k_ip.weight", "K.to_v_ip.weight"}`` shaped as each layer's
own ``to_k``/``to_v``, K = 1, 3, 5, ...: the j-th cross-attention layer is entry 2j+1 of the list of all attention
processors, self-attention ones included. A ``.safetensors`` file holds them flattened (``image_proj.proj.weight``,
``ip_adapter.1.to_k_ip.weight``). Only this base variant is supported (not Plus, Full-Face or FaceID).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ConfigError, InputError, ModelNotFound
from .run_config import DEFAULT_IP_ADAPTER_SCALE as DEFAULT_SCALE  # noqa: F401  (the pipeline's default)

logger = logging.getLogger(__name__)

#: ``--ip-adapter tiny``: random weights shaped for the loaded UNet, with a tiny random image encoder (for tests).
TINY = "tiny"
#: h94/IP-Adapter's SD1.5 base adapter: what a hub id or a folder means without a file name.
DEFAULT_SUBFOLDER, DEFAULT_WEIGHTS = "models", "ip-adapter_sd15.safetensors"
#: The image encoder's folder beside the weights (h94/IP-Adapter: models/image_encoder, OpenCLIP ViT-H/14).
IMAGE_ENCODER_FOLDER = "image_encoder"
#: Tokens the base IP-Adapter makes of one image embedding (diffusers' ImageProjection for "proj.weight").
NUM_TOKENS = 4
_IMAGE_PROJ_KEYS = {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
#: A hub repository id, optionally followed by a path in the repository.
_HUB = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:/(?P<path>[\w./-]+))?")


@dataclass
class IPAdapter:
    """A loaded IP-Adapter: its weights (``{"image_proj": ..., "ip_adapter": ...}`` on the UNet's device and dtype),
    the CLIP image encoder and its image processor. ``name`` says where it came from."""

    name: str
    weights: dict[str, dict[str, torch.Tensor]]
    image_encoder: object  # transformers.CLIPVisionModelWithProjection
    processor: object  # transformers.CLIPImageProcessor(Pil)

    @property
    def embed_dim(self) -> int:
        """D, the image embedding's width (the encoder's projection_dim)."""
        return int(self.image_encoder.config.projection_dim)

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """M uint8 RGB images [H, W, 3] -> [M, D] CLIP image embeddings (resized and centre-cropped to the encoder's
        size by the processor), on the encoder's device."""
        pixels = self.processor(images=list(images), return_tensors="pt").pixel_values  # [M, 3, S, S]
        enc = self.image_encoder
        return enc(pixels.to(enc.device, enc.dtype)).image_embeds


def read_style_image(path: str, field: str = "style_image") -> np.ndarray:
    """A style image as uint8 RGB [H, W, 3] (EXIF orientation applied, alpha dropped); an InputError names the file."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such style image file ({field})")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not a readable image ({field}; PNG, JPEG or WebP)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# -- the UNet's cross-attention layers and the weights' layout ---------------------------------------------------


def cross_attention_layers(unet) -> list[tuple[int, object]]:
    """(K, attention module) of each cross-attention layer in the weights' numbering (K = 1, 3, 5, ...)."""
    names = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    return [(2 * j + 1, unet.get_submodule(n.removesuffix(".processor"))) for j, n in enumerate(names)]


def split_weights(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Flattened keys ("image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight") -> the nested layout."""
    out: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        if part in out and rest:
            out[part][rest] = value
    return out


def flatten_weights(weights: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The nested layout -> flattened keys, as an IP-Adapter ``.safetensors`` file holds them."""
    return {f"{part}.{k}": v for part, sub in weights.items() for k, v in sub.items()}


def check_weights(weights: dict, unet, embed_dim: int, name: str) -> None:
    """A ConfigError (field ``ip_adapter``) unless ``weights`` are a base IP-Adapter for this UNet and an image
    encoder of width ``embed_dim``: checked before anything is installed."""
    proj, layers = weights.get("image_proj") or {}, weights.get("ip_adapter") or {}
    if set(proj) != _IMAGE_PROJ_KEYS:
        raise ConfigError(
            "ip_adapter",
            "a base IP-Adapter (image_proj with proj and norm, e.g. h94/IP-Adapter's models/ip-adapter_sd15.safetensors"
            "; the Plus, Full-Face and FaceID variants are not supported)",
            f"{name}: image_proj holds {sorted(proj)[:4]}",
        )
    c = unet.config.cross_attention_dim
    if tuple(proj["proj.weight"].shape) != (NUM_TOKENS * c, embed_dim):
        raise ConfigError(
            "ip_adapter",
            f"an image projection [{NUM_TOKENS * c}, {embed_dim}] (4 tokens of the base model's cross-attention "
            f"width {c}, from the image encoder's embedding width {embed_dim})",
            f"{name}: {list(proj['proj.weight'].shape)} (an adapter for another model family, or another encoder?)",
        )
    expected = {}
    for k, attn in cross_attention_layers(unet):
        expected[f"{k}.to_k_ip.weight"] = tuple(attn.to_k.weight.shape)
        expected[f"{k}.to_v_ip.weight"] = tuple(attn.to_v.weight.shape)
    given = {k: tuple(v.shape) for k, v in layers.items()}
    if given != expected:
        wrong = sorted(set(given) ^ set(expected)) or [k for k in expected if given[k] != expected[k]]
        raise ConfigError(
            "ip_adapter",
            f"an IP-Adapter for this base model: {len(expected) // 2} cross-attention layers",
            f"{name}: {len(given) // 2} layers, first mismatch {wrong[0]!r} {given.get(wrong[0])}",
        )


# -- loading ---------------------------------------------------------------------------------------------------------


def _image_processor(image_size: int):
    """CLIP's preprocessing at the encoder's size (resize, centre crop, CLIP mean/std), as diffusers builds it for
    IP-Adapter. The PIL backend always: the one transformers falls back to without torchvision, so results do not
    depend on whether torchvision is installed."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # pragma: no cover - transformers without the split backends
        from transformers import CLIPImageProcessor as Processor
    return Processor(size=image_size, crop_size=image_size)


def tiny_image_encoder(projection_dim: int = 16, seed: int = 0):
    """A random CLIPVisionModelWithProjection at toy size (2 layers, 32 px, width 16) for ``--ip-adapter tiny``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(config).eval()


def tiny_weights(unet, embed_dim: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random IP-Adapter weights in the real layout for ``unet`` (float32, CPU): N(0, 1/fan_in) projections."""
    gen = torch.Generator().manual_seed(seed)
    c = unet.config.cross_attention_dim

    def rand(shape) -> torch.Tensor:
        return torch.randn(shape, generator=gen) / shape[-1] ** 0.5

    image_proj = {
        "proj.weight": rand((NUM_TOKENS * c, embed_dim)),
        "proj.bias": torch.zeros(NUM_TOKENS * c),
        "norm.weight": torch.ones(c),
        "norm.bias": torch.zeros(c),
    }
    layers = {}
    for k, attn in cross_attention_layers(unet):
        layers[f"{k}.to_k_ip.weight"] = rand(tuple(attn.to_k.weight.shape))
        layers[f"{k}.to_v_ip.weight"] = rand(tuple(attn.to_v.weight.shape))
    return {"image_proj": image_proj, "ip_adapter": layers}


def _read_weights(path: Path, allow_pickle: bool) -> dict:
    from .models import _check_single_file

    _check_single_file(path, allow_pickle, "ip_adapter")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return split_weights(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)  # the original repo's .bin: already nested
    if isinstance(state, dict) and not {"image_proj", "ip_adapter"} & set(state):
        state = split_weights(state)
    return state


def _local_weights(path: Path) -> Path:
    """The weights file of a local file or folder (the folder's or its models/ ip-adapter_sd15.safetensors)."""
    if path.is_file():
        return path
    for candidate in (path / DEFAULT_WEIGHTS, path / DEFAULT_SUBFOLDER / DEFAULT_WEIGHTS):
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        f"IP-Adapter folder {path}: no {DEFAULT_WEIGHTS} in it or in its {DEFAULT_SUBFOLDER}/; pass the weights file"
    )


def hub_parts(ident: str) -> tuple[str, str] | None:
    """(repo, path in the repo or '') of a hub reference ``owner/name[/PATH]``; None for anything else (a path that
    does not exist, like ``models/ip-adapter.safetensors``, is not taken for a repository)."""
    from .models import SINGLE_FILE_SUFFIXES

    m = _HUB.fullmatch(ident)
    if m is None or ".." in ident.split("/") or m.group("repo").lower().endswith(SINGLE_FILE_SUFFIXES):
        return None
    return m.group("repo"), (m.group("path") or "").strip("/")


def _hub_file(path: str) -> tuple[str, str]:
    """(subfolder, file name) of the weights for a path in a hub repo: '' is h94's layout, a folder holds
    ip-adapter_sd15.safetensors, a file is itself."""
    from .models import SINGLE_FILE_SUFFIXES

    if not path:
        return DEFAULT_SUBFOLDER, DEFAULT_WEIGHTS
    if path.lower().endswith(SINGLE_FILE_SUFFIXES):
        sub, _, filename = path.rpartition("/")
        return sub, filename
    return path, DEFAULT_WEIGHTS


def _hub_weights(repo: str, path: str, allow_pickle: bool, cache_only: bool) -> Path:
    """The weights file of a hub reference, downloaded once (``cache_only``: from the local cache)."""
    from huggingface_hub import hf_hub_download

    from .models import _check_single_file

    sub, filename = _hub_file(path)
    _check_single_file(Path(filename), allow_pickle, "ip_adapter")
    return Path(hf_hub_download(repo, filename, subfolder=sub or None, local_files_only=cache_only))


def _not_found(source: str, err: Exception, cache_only: bool) -> ModelNotFound:
    where = "the Hugging Face hub is not reachable from here, so only the local cache was searched; "
    return ModelNotFound(
        f"could not load the IP-Adapter '{source}': {where if cache_only else ''}{type(err).__name__}: "
        f"{str(err).splitlines()[0][:300]}. Pass a local weights file (e.g. ./models/{DEFAULT_WEIGHTS}, with its "
        f"{IMAGE_ENCODER_FOLDER}/ folder beside it), or download it once with `huggingface-cli download "
        f"h94/IP-Adapter {DEFAULT_SUBFOLDER}/{DEFAULT_WEIGHTS}` while online."
    )


def _load_image_encoder(ident: str, subfolder: str, dtype: torch.dtype, allow_pickle: bool):
    """A CLIPVisionModelWithProjection from a folder, or a hub repo (and ``subfolder`` in it)."""
    from transformers import CLIPVisionModelWithProjection

    from .models import load_transformers

    extra = {"subfolder": subfolder} if subfolder else {}
    what = "IP-Adapter image encoder"
    loader = CLIPVisionModelWithProjection.from_pretrained
    return load_transformers(
        loader, ident, what, "ip_adapter_image_encoder", allow_pickle=allow_pickle, dtype=dtype, **extra
    )


def _image_encoder(source: str, weights_file: Path, hub: tuple[str, str] | None, given, dtype, allow_pickle):
    """The image encoder: the given hub id (``owner/name[/SUBFOLDER]``) or folder; else the ``image_encoder/``
    folder beside the weights (in the same hub repo for a hub reference)."""
    if given is not None:
        parts = hub_parts(given) if not Path(given).expanduser().exists() else None
        if parts is not None:
            return _load_image_encoder(parts[0], parts[1], dtype, allow_pickle)
        return _load_image_encoder(given, "", dtype, allow_pickle)
    if hub is not None:
        repo, path = hub
        sub = _hub_file(path)[0]
        return _load_image_encoder(repo, f"{sub}/{IMAGE_ENCODER_FOLDER}".lstrip("/"), dtype, allow_pickle)
    folder = weights_file.parent / IMAGE_ENCODER_FOLDER
    if not folder.is_dir():
        raise ModelNotFound(
            f"IP-Adapter {source}: no image encoder beside it (looked for {folder}); pass "
            "--ip-adapter-image-encoder ID|FOLDER (h94/IP-Adapter's is models/image_encoder: "
            "ip_adapter_image_encoder: h94/IP-Adapter/models/image_encoder)"
        )
    return _load_image_encoder(str(folder), "", dtype, allow_pickle)


def load_adapter(
    source: str,
    unet,
    *,
    image_encoder: str | None = None,
    allow_pickle: bool = False,
    seed: int = 0,
) -> IPAdapter:
    """The IP-Adapter ``source`` for ``unet``, checked to fit it, on the UNet's device and dtype.

    ``source``: ``tiny`` (random, :func:`tiny_weights`, seeded by ``seed``), a weights file (``.safetensors``; a pickle
    ``.bin`` needs ``allow_pickle``), a folder with ``ip-adapter_sd15.safetensors`` (in it or in ``models/``), a hub
    repo (``h94/IP-Adapter``: its ``models/ip-adapter_sd15.safetensors``) or a file in one
    (``h94/IP-Adapter/models/ip-adapter_sd15_light.safetensors``). ``image_encoder``: a hub id (with an optional
    subfolder) or a folder; default the ``image_encoder/`` beside the weights.
    """
    from .models import _check_single_file, use_local_cache_only

    device, dtype = unet.device, unet.dtype
    if source == TINY:
        encoder = tiny_image_encoder(seed=seed)
        weights = tiny_weights(unet, encoder.config.projection_dim, seed)
    else:
        local = Path(source).expanduser()
        _check_single_file(local, allow_pickle, "ip_adapter")  # the pickle gate first, as for every loader
        hub = None if local.exists() else hub_parts(source)
        # the local cache at once when the hub cannot be reached (models.use_local_cache_only)
        cache_only = hub is not None and use_local_cache_only(hub[0])
        try:
            if hub is not None:
                weights_file = _hub_weights(*hub, allow_pickle, cache_only)
            elif local.exists():
                weights_file = _local_weights(local)
            else:
                raise FileNotFoundError(f"no such file or folder: {source}")
            weights = _read_weights(weights_file, allow_pickle)
        except (ConfigError, ModelNotFound):
            raise
        except Exception as e:  # OSError, hub errors, safetensors and unpickling errors
            raise _not_found(source, e, cache_only) from e
        encoder = _image_encoder(source, weights_file, hub, image_encoder, dtype, allow_pickle)
    encoder = encoder.to(device, dtype).eval()
    check_weights(weights, unet, encoder.config.projection_dim, source)
    weights = {part: {k: v.to(device, dtype) for k, v in sub.items()} for part, sub in weights.items()}
    logger.info("IP-Adapter %s: %d cross-attention layers", source, len(weights["ip_adapter"]) // 2)
    return IPAdapter(source, weights, encoder, _image_processor(encoder.config.image_size))


# -- installing for one call --------------------------------------------------------------------------------------


#: diffusers' warning on every ``ModelMixin.to(dtype=...)``, which ``load_ip_adapter`` calls with the UNet's own dtype
#: (a no-op): (logger, words of the message).
_FLOAT32_WARNING = ("diffusers.models.modeling_utils", "should be kept in float32")


@contextlib.contextmanager
def _without(message: tuple[str, str]) -> Iterator[None]:
    """Drop the log records of logger ``message[0]`` that contain ``message[1]`` while the block runs."""

    def keep(record: logging.LogRecord) -> bool:
        return message[1] not in record.getMessage()

    log = logging.getLogger(message[0])
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


@contextlib.contextmanager
def ip_adapter_installed(pipe, adapter: IPAdapter | None, scale: float) -> Iterator[None]:
    """The adapter's processors on the cross-attention layers and its image projection, installed by diffusers'
    ``load_ip_adapter`` at ``scale`` (``set_ip_adapter_scale``); on exit the UNet's processors (the very objects),
    its ``encoder_hid_proj`` and its config are as before. Nothing happens for ``adapter=None``."""
    if adapter is None:
        yield
        return
    unet = pipe.unet
    if unet.encoder_hid_proj is not None:
        raise ValueError("the UNet has an encoder_hid_proj already (an IP-Adapter loaded outside fresco-v2v?)")
    processors, hid_type = dict(unet.attn_processors), unet.config.encoder_hid_dim_type
    try:
        # a state dict: diffusers converts it into IPAdapterAttnProcessor2_0s and an ImageProjection
        with _without(_FLOAT32_WARNING):
            pipe.load_ip_adapter(adapter.weights, subfolder=None, weight_name=None, image_encoder_folder=None)
        pipe.set_ip_adapter_scale(scale)
        yield
    finally:
        unet.set_attn_processor(processors)  # diffusers pops from the dict it is given: this one is ours
        if "encoder_hid_proj" in unet._modules:
            del unet._modules["encoder_hid_proj"]
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = hid_type  # diffusers sets the attribute (FrozenDict): so do we


def guidance_image_embeds(style_embeds: torch.Tensor, guidance: bool) -> list[torch.Tensor]:
    """The UNet's ``added_cond_kwargs["image_embeds"]`` for one IP-Adapter: [G*N, 1, D] from the frames' style
    embeddings [N, D]; under classifier-free guidance the unconditional half is zero (as diffusers'
    ``prepare_ip_adapter_image_embeds`` for the base adapter), in the order of the prompt batch [uncond; cond]."""
    e = style_embeds[:, None]  # [N, 1, D]: one image per frame
    return [torch.cat([torch.zeros_like(e), e]) if guidance else e]


def check_style_embeds(adapter: IPAdapter | None, style_embeds, n: int) -> None:
    if style_embeds is None:
        return
    if adapter is None:
        raise ConfigError("style_embeds", "a pipeline with an IP-Adapter (load_pipeline(..., ip_adapter=...))", None)
    if tuple(style_embeds.shape) != (n, adapter.embed_dim):
        raise ConfigError("style_embeds", f"[{n}, {adapter.embed_dim}]: one embedding per frame", style_embeds.shape)


# -- a run's style images ----------------------------------------------------------------------------------------


class StyleEmbeddings:
    """Each style image of a run encoded once; :meth:`for_frames` gives a batch's [N, D], each keyframe the
    embedding of its style image (``run_config.style_image_for_frame``: chosen per keyframe like its prompt)."""

    def __init__(self, adapter: IPAdapter, cfg):
        self.adapter, self.cfg = adapter, cfg
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, path: str) -> torch.Tensor:
        if path not in self._cache:
            self._cache[path] = self.adapter.encode([read_style_image(path)])[0]  # [D]
        return self._cache[path]

    def for_frames(self, frames: Sequence[int], fps: float, frame_seconds) -> torch.Tensor:
        from .run_config import style_image_for_frame

        return torch.stack([self(style_image_for_frame(self.cfg, k, fps, frame_seconds)) for k in frames])


def check_style_files(cfg) -> None:
    """Every style image of ``cfg`` readable, before any work: an InputError names the file."""
    if cfg.style_image is not None:
        read_style_image(cfg.style_image)
    for key, path in cfg.style_images.items():
        read_style_image(path, f"style_images[{key!r}]")
