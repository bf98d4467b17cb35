"""Loading real models: base SD1.5-family checkpoints, ControlNets, LoRAs, FreeU, device and dtype.

All loading is diffusers' own (``from_pretrained``, ``from_single_file``, ``load_lora_weights``); this module picks
the right call, and turns failures into a :class:`ModelNotFound` that names what failed and what to pass instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoints
from .config import CONTROLNET_TYPES, FREEU_SD15, SDXL_CONTROLNET_TYPES, SDXL_FP16_VAE
from .devices import resolve_device, resolve_dtype  # noqa: F401  (re-exported: the loaders' entry points)
from .errors import ConfigError, ModelNotFound

logger = logging.getLogger(__name__)

#: Default ControlNet: canny edges, whose condition needs no weights (paper §3.1's e; the authors also offer HED
#: and depth, whose annotators need weights).
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-canny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class LoraSpec:
    path: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """'PATH[:SCALE]' as given on the command line (a Windows drive letter is not a scale)."""
        head, sep, tail = text.rpartition(":")
        if sep and head and not tail.startswith(("\\", "/")):
            try:
                return cls(head, float(tail))
            except ValueError:
                pass
        return cls(text, 1.0)


def find_stack(model: str):
    """The registered stack (:mod:`fresco_v2v.stacks`) of ``model``, or None for a hub id, folder or file."""
    from . import stacks, toyworld  # noqa: F401  (each registers its stacks: "tiny", "toy")

    return stacks.find_stack(model)


def builtin_model(model: str) -> bool:
    """A model that comes with fresco-v2v and needs no download: a registered stack (:mod:`fresco_v2v.stacks`:
    'tiny', random; 'toy' / 'toy:PATH', the toy world's)."""
    return find_stack(model) is not None


def model_note(model: str) -> str:
    """What a user must know about a built-in model's output ("" for real models)."""
    stack = find_stack(model)
    return stack.note if stack is not None else ""


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached now (a TCP connection to ``HF_ENDPOINT`` within ``timeout`` s).

    False at once under ``HF_HUB_OFFLINE``; True when a proxy is configured (the proxy decides, so we do not probe).
    Loading uses it to go to the local cache at once instead of through the hub client's retries, which take ~25 s
    per model without a network (measured here) before the same error.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def use_local_cache_only(ident: str) -> bool:
    """True when ``ident`` names no local file or folder and the hub cannot be reached: use the local cache only."""
    if Path(ident).exists():
        return False
    if hub_reachable():
        return False
    logger.info("the Hugging Face hub is not reachable: looking for '%s' in the local cache only", ident)
    return True


def _not_found(
    what: str, ident: str, err: Exception, cache_only: bool = False, single_file: bool = True
) -> ModelNotFound:
    where = "the Hugging Face hub is not reachable from here, so only the local cache was searched; "
    where = where if cache_only else ""
    local = (
        "a local folder in diffusers layout (with model_index.json or config.json), or a single .safetensors file, "
        "e.g. --model ./models/my_model.safetensors"
        if single_file
        else "a local folder (with config.json and the weights, as save_pretrained writes it)"
    )
    hint = (
        f"Offline or without access to the hub? Pass {local}; or download it once with `huggingface-cli download "
        f"{ident}` while online. A repo with only pickle (.bin) weights loads with --allow-pickle, if you trust it."
    )
    return ModelNotFound(
        f"could not load {what} '{ident}': {where}{type(err).__name__}: {str(err).splitlines()[0][:300]}. {hint}"
    )


def _check_single_file(path: Path, allow_pickle: bool, field_name: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise ConfigError(
            field_name,
            "a .safetensors file; pickle checkpoints (.ckpt/.pt/.bin) can run code when loaded, so they need an "
            "explicit opt-in (allow_pickle=True, --allow-pickle) for files you trust",
            str(path),
        )


def _check_folder(ident: str, allow_pickle: bool, field_name: str) -> None:
    """A local folder with a component whose weights are all pickle files (.bin/.pt/.ckpt beside no .safetensors)
    needs the opt-in too: loading it would unpickle."""
    path = Path(ident)
    if allow_pickle or not path.is_dir():
        return
    for pickle in sorted(p for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES):
        if not any(pickle.parent.glob("*.safetensors")):
            raise ConfigError(
                field_name,
                "weights in .safetensors; this folder has pickle-only weights "
                f"({pickle.relative_to(path)}), which can run code when loaded: pass allow_pickle=True "
                "(--allow-pickle) for files you trust",
                str(path),
            )


def _safetensors_only(allow_pickle: bool) -> bool | None:
    """diffusers' ``use_safetensors``: True refuses a hub repo or folder without .safetensors weights."""
    return None if allow_pickle else True


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator, or a leading ./ ~ /, is meant as a folder.
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def load_transformers(
    loader, ident: str, what: str, field_name: str, *, weights: bool = True, allow_pickle: bool = False, **kwargs
):
    """``loader(ident)`` (a transformers ``from_pretrained``: a model, or a tokenizer with ``weights=False``) from a
    hub id or a folder, with the policy of every loader here: the pickle gate on weights, the local cache only when
    the hub cannot be reached (also for the PEFT adapter lookup transformers runs), failures as ModelNotFound."""
    local = Path(ident).expanduser()
    if not local.exists() and _looks_like_path(ident):
        raise ModelNotFound(f"{what} {ident!r}: no such folder (pass an existing folder or a hub id)")
    if weights:
        _check_folder(str(local), allow_pickle, field_name)
        kwargs.setdefault("use_safetensors", _safetensors_only(allow_pickle))
    cache_only = use_local_cache_only(str(local))  # False for an existing folder
    if cache_only and weights:
        kwargs["adapter_kwargs"] = {"local_files_only": True}
    try:
        return loader(str(local) if local.exists() else ident, local_files_only=cache_only, **kwargs)
    except Exception as e:  # transformers raises OSError, ValueError, hub errors...: all mean "cannot load this"
        logger.debug("loading %s %r failed", what, ident, exc_info=True)
        raise _not_found(what, ident, e, cache_only, single_file=False) from e


def _single_file(path: Path, allow_pickle: bool, field_name: str, kind: str) -> checkpoints.CheckpointKind:
    """The checks before a single-file load: pickle gate, existence, then the file's family (read from its tensor
    names: a file of another family fails here, before any loading)."""
    _check_single_file(path, allow_pickle, field_name)
    if not path.is_file():
        names = {
            checkpoints.BASE: "base model",
            checkpoints.SD15: "base model",
            checkpoints.SD15_CONTROLNET: "ControlNet",
        }
        what = names.get(kind, kind.upper())
        raise _not_found(what.replace("LORA", "LoRA"), str(path), FileNotFoundError(f"no such file: {path}"))
    return checkpoints.check_checkpoint(path, kind, field_name)


def _offline_config(kind: str) -> dict:
    """``from_single_file`` arguments that take the configuration from our package data, not the hub."""
    return {"config": str(checkpoints.config_folder(kind)), "local_files_only": True}


def _load_model(cls, what: str, field_name: str, ident: str, allow_pickle: bool, kind: str, **kwargs):
    """``cls`` (a diffusers model class) from a single file of ``kind`` (configured from our package data, no
    network) or, through ``from_pretrained``, a hub id or folder, behind the pickle gate; any loading failure is a
    ModelNotFound naming ``what`` and ``ident``."""
    path = Path(ident)
    cache_only = False
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        _single_file(path, allow_pickle, field_name, kind)
    try:
        if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            extra = {"subfolder": "vae"} if kind in (checkpoints.VAE, checkpoints.SDXL_VAE) else {}
            return cls.from_single_file(str(path), **_offline_config(kind), **extra, **kwargs)
        _check_folder(ident, allow_pickle, field_name)
        cache_only = use_local_cache_only(ident)
        return cls.from_pretrained(
            ident, local_files_only=cache_only, use_safetensors=_safetensors_only(allow_pickle), **kwargs
        )
    except ConfigError:
        raise
    except Exception as e:  # diffusers/hub raise many types (OSError, HfHubHTTPError, ValueError, ...)
        raise _not_found(what, ident, e, cache_only) from e


def load_controlnet(ident: str, dtype: torch.dtype, allow_pickle: bool = False, family: str = checkpoints.SD15):
    """A ControlNetModel from a hub id, a folder or a single file (single files: SD1.5 ControlNets; an SDXL
    ControlNet is a hub id or a diffusers folder)."""
    from diffusers import ControlNetModel

    if family == checkpoints.SDXL and Path(ident).suffix.lower() in SINGLE_FILE_SUFFIXES:
        raise ConfigError(
            "controlnet",
            "an SDXL ControlNet as a hub id or diffusers folder, e.g. "
            f"{SDXL_CONTROLNET_TYPES['canny']} (single ControlNet files load for SD1.5 models)",
            ident,
        )
    kind = checkpoints.SD15_CONTROLNET
    return _load_model(ControlNetModel, "ControlNet", "controlnet", ident, allow_pickle, kind, torch_dtype=dtype)


def load_vae(ident: str, dtype: torch.dtype, allow_pickle: bool = False, family: str = checkpoints.SD15):
    """An AutoencoderKL from a hub id (e.g. the authors' ``stabilityai/sd-vae-ft-mse``; for SDXL in float16
    ``madebyollin/sdxl-vae-fp16-fix``), a folder, or one file (configured as ``family``'s VAE).

    A folder or repo may hold the VAE at its root (``config.json``) or under ``vae/`` (a whole pipeline's).
    """
    from diffusers import AutoencoderKL

    path = Path(ident)
    extra = {"subfolder": "vae"} if path.is_dir() and (path / "vae" / "config.json").is_file() else {}
    kind = checkpoints.SDXL_VAE if family == checkpoints.SDXL else checkpoints.VAE
    return _load_model(AutoencoderKL, "VAE", "vae", ident, allow_pickle, kind, torch_dtype=dtype, **extra)


def model_family(model: str, allow_pickle: bool = False) -> str:
    """``checkpoints.SD15`` or ``checkpoints.SDXL``: a stack's own, a single file's (its tensor names), a folder's
    or cached/hub repo's (``model_index.json`` with a second text encoder). Read before any weights load."""
    stack = find_stack(model)
    if stack is not None:
        return stack.family
    path = Path(model)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        return _single_file(path, allow_pickle, "model", checkpoints.BASE).kind
    index = path / "model_index.json"
    if not path.is_dir():
        try:  # a hub id: the small index file only, from the cache when the hub cannot be reached
            from huggingface_hub import hf_hub_download

            index = Path(hf_hub_download(model, "model_index.json", local_files_only=use_local_cache_only(model)))
        except Exception:  # not found: loading says so, with the message of every loader
            logger.debug("no model_index.json for %r", model, exc_info=True)
            return checkpoints.SD15
    try:
        second_encoder = "text_encoder_2" in json.loads(index.read_text())
    except (OSError, ValueError):
        return checkpoints.SD15
    return checkpoints.SDXL if second_encoder else checkpoints.SD15


def default_controlnet(kind: str, family: str) -> str:
    """The ControlNet weights of condition type ``kind`` (canny, depth, hed) for a base model of ``family``."""
    if family != checkpoints.SDXL:
        return CONTROLNET_TYPES[kind]
    if kind not in SDXL_CONTROLNET_TYPES:
        raise ConfigError(
            "controlnet",
            f"for an SDXL model, {kind} with SDXL ControlNet weights ({kind}:ID_OR_PATH): there is no default SDXL "
            f"{kind} ControlNet (defaults: {', '.join(f'{k}: {v}' for k, v in SDXL_CONTROLNET_TYPES.items())})",
            kind,
        )
    return SDXL_CONTROLNET_TYPES[kind]


def _check_controlnet_fits(pipe, ident: str) -> None:
    """Each ControlNet takes this UNet's conditioning (an SD1.5 ControlNet cannot guide SDXL, nor the reverse)."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    multi = isinstance(pipe.controlnet, MultiControlNetModel)
    nets = [] if pipe.controlnet is None else list(pipe.controlnet.nets) if multi else [pipe.controlnet]
    want = (pipe.unet.config.cross_attention_dim, pipe.unet.config.get("addition_embed_type"))
    for net in nets:
        got = (net.config.cross_attention_dim, net.config.get("addition_embed_type"))
        if got != want:
            raise ConfigError(
                "controlnet",
                f"ControlNets made for the base model {ident} (cross-attention width {want[0]}"
                + (", SDXL's added conditions: an SDXL ControlNet)" if want[1] else "; an SD1.5 ControlNet)"),
                f"a ControlNet of cross-attention width {got[0]}" + (" for SDXL" if got[1] else ""),
            )


def _warn_fp16_vae(pipe, dtype: torch.dtype, vae: str | None) -> None:
    if dtype == torch.float16 and vae is None and pipe.vae.config.get("force_upcast", False):
        logger.warning(
            "this model's VAE overflows in float16 (its config says force_upcast: NaN or black frames); pass an "
            "fp16-safe VAE, e.g. --vae %s, or use --dtype float32 / bfloat16",
            SDXL_FP16_VAE,
        )


def _swap_vae(pipe, vae, ident: str) -> None:
    """Put ``vae`` into ``pipe`` after checking it fits the UNet (latent channels and downsampling factor)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if vae.config.latent_channels != pipe.unet.config.in_channels or factor != pipe.vae_scale_factor:
        raise ConfigError(
            "vae",
            f"a VAE with {pipe.unet.config.in_channels} latent channels and factor {pipe.vae_scale_factor} "
            "(the base model's)",
            f"{ident}: {vae.config.latent_channels} channels, factor {factor}",
        )
    pipe.register_modules(vae=vae)


def _single_file_parts(family: str) -> dict:
    """What ``from_single_file`` of ``family`` needs beside the file: our shipped configs and, for SDXL (whose
    config ships no tokenizer files), CLIP's tokenizer twice, the second padding with "!" as SDXL's does."""
    config = _offline_config(family)
    if family != checkpoints.SDXL:
        return config
    from transformers import CLIPTokenizer

    folder = checkpoints.config_folder(checkpoints.SD15) / "tokenizer"
    return config | {
        "tokenizer": CLIPTokenizer.from_pretrained(folder),
        "tokenizer_2": CLIPTokenizer.from_pretrained(folder, pad_token="!"),
    }


def _load_base(model: str, controlnets: Sequence[str], dt: torch.dtype, allow_pickle: bool, vae: str | None):
    """The base pipeline with its ControlNets from a hub id, folder or single file, with ``vae`` in it."""
    from .pipeline import FrescoPipeline
    from .sdxl import FrescoXLPipeline

    path = Path(model)
    single = path.suffix.lower() in SINGLE_FILE_SUFFIXES
    found = _single_file(path, allow_pickle, "model", checkpoints.BASE) if single else None
    family = found.kind if found is not None else model_family(model, allow_pickle)
    cls = FrescoXLPipeline if family == checkpoints.SDXL else FrescoPipeline
    baked_vae = found is None or found.has_vae
    if not baked_vae and vae is None:
        raise ConfigError("vae", f"a VAE (--vae ID|PATH), as {path} has no VAE weights", None)
    nets = [load_controlnet(c, dt, allow_pickle, family) for c in controlnets]
    cn = nets[0] if len(nets) == 1 else (nets or None)  # none: the UNet alone
    cache_only = False
    try:
        if single:
            # a checkpoint without a VAE takes the chosen one at load time (there is nothing to convert)
            given = {} if baked_vae else {"vae": load_vae(vae, dt, allow_pickle, family)}
            parts = _single_file_parts(family)
            pipe = cls.from_single_file(str(path), controlnet=cn, torch_dtype=dt, **parts, **given)
        else:
            _check_folder(model, allow_pickle, "model")
            cache_only = use_local_cache_only(model)
            pipe = cls.from_pretrained(
                model,
                controlnet=cn,
                dtype=dt,
                local_files_only=cache_only,
                use_safetensors=_safetensors_only(allow_pickle),
            )
    except ConfigError:
        raise
    except Exception as e:
        raise _not_found("base model", model, e, cache_only) from e
    if vae is not None and baked_vae:
        _swap_vae(pipe, load_vae(vae, dt, allow_pickle, family), vae)
    _check_controlnet_fits(pipe, model)
    return pipe


def _load_loras(pipe, loras: Sequence[LoraSpec], allow_pickle: bool) -> None:
    """Each LoRA as its own adapter at its scale; single files are checked for their format first."""
    names = []
    for i, spec in enumerate(loras):
        name = f"lora{i}"
        if Path(spec.path).suffix.lower() in SINGLE_FILE_SUFFIXES:
            kind = checkpoints.SDXL_LORA if hasattr(pipe, "text_encoder_2") else checkpoints.LORA
            _single_file(Path(spec.path), allow_pickle, "lora", kind)  # LoHa, LoKr, ... fail here
        _check_folder(spec.path, allow_pickle, "lora")
        cache_only = use_local_cache_only(spec.path)
        try:
            pipe.load_lora_weights(
                spec.path,
                adapter_name=name,
                local_files_only=cache_only,
                use_safetensors=_safetensors_only(allow_pickle),
            )
        except Exception as e:
            raise _not_found("LoRA", spec.path, e, cache_only) from e
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[s.scale for s in loras])


def load_pipeline(
    model: str,
    controlnets: Sequence[str] | None = None,
    *,
    loras: Sequence[LoraSpec] = (),
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    freeu: bool | Sequence[float] = False,
    allow_pickle: bool = False,
    seed: int = 0,
    vae: str | None = None,
    ip_adapter: str | None = None,
    ip_adapter_image_encoder: str | None = None,
):
    """A ready :class:`~fresco_v2v.pipeline.FrescoPipeline` on its device.

    ``model``: a hub id or a folder (``from_pretrained``), a single SD1.x checkpoint file (``from_single_file``
    with the configs shipped in :mod:`fresco_v2v.checkpoints`: no network), or a registered stack
    (:mod:`fresco_v2v.stacks`): "tiny", random (noise-like output), or "toy" / "toy:PATH", the toy world's trained
    128x128 stack (:mod:`fresco_v2v.toyworld`), or "tiny-xl", random with SDXL's layout. SDXL models (hub id,
    folder or file) load as :class:`~fresco_v2v.sdxl.FrescoXLPipeline`. Stacks bring their own ControlNets (one per
    entry of ``controlnets``, whose ids are then ignored). ``controlnets`` None: the family's canny ControlNet.
    ``vae``: another VAE for the model (:func:`load_vae`; SDXL in float16 needs an fp16-safe one).
    ``ip_adapter``: an IP-Adapter source (:func:`fresco_v2v.ip_adapter.load_adapter`, with
    ``ip_adapter_image_encoder``), kept as ``pipe.ip_adapter`` and installed only during calls given style embeddings.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    stack = find_stack(model)
    if controlnets is None:
        controlnets = [default_controlnet("canny", model_family(model, allow_pickle))]
    if stack is not None:
        pipe = stack.build(model, len(controlnets), seed)
        if vae is not None:
            _swap_vae(pipe, load_vae(vae, dt, allow_pickle, stack.family), vae)
    else:
        pipe = _load_base(model, controlnets, dt, allow_pickle, vae)
    _warn_fp16_vae(pipe, dt, vae)
    # cast only when needed: diffusers warns on every .to(dtype), even a no-op one
    pipe = pipe.to(dev) if pipe.unet.dtype == dt else pipe.to(dev, dt)
    if loras:
        _load_loras(pipe, loras, allow_pickle)
    if freeu is True:
        if getattr(pipe.unet.config, "addition_embed_type", None) == "text_time":  # SDXL's decoder, not SD1.x's
            raise ConfigError("freeu", "four factors [b1, b2, s1, s2] for an SDXL model (true means SD1.x's)", "true")
        pipe.enable_freeu(**FREEU_SD15)
    elif freeu:
        pipe.enable_freeu(**dict(zip(("b1", "b2", "s1", "s2"), map(float, freeu))))
    if ip_adapter is not None:
        from .ip_adapter import load_adapter

        pipe.ip_adapter = load_adapter(
            ip_adapter, pipe.unet, image_encoder=ip_adapter_image_encoder, allow_pickle=allow_pickle
        )
    logger.info("loaded %s with %d ControlNet(s) on %s as %s", model, len(controlnets), dev, dt)
    return pipe
