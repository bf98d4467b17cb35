"""Shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this folder is on the import path)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from fresco_v2v.keyframes import frame_distances, select_keyframes
from fresco_v2v.video import read_video

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
CLIPS = ("boxer-punching-towards-camera", "car-turn", "dog", "music")
#: Captions of the input clips (the source prompts of Fram-Acc).
CAPTIONS = {
    "boxer-punching-towards-camera": "a man in boxing gloves punching towards the camera",
    "car-turn": "a silver car turning on a road in the mountains",
    "dog": "a corgi dog looking up in a room",
    "music": "a person playing music",
}


def machine_line(pipe, model: str) -> str:
    from fresco_v2v.models import model_note

    note = f" ({model_note(model)})" if model_note(model) else ""
    return (
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: {pipe.device}; dtype: {pipe.unet.dtype}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model: {model}{note}"
    )


def keyframe_batch(
    name: str, resolution: int, n: int, s_min: int = 2, s_max: int = 6
) -> tuple[np.ndarray, list[int]] | None:
    """(every frame of a shared clip at the model's size, its first ``n`` keyframes by Alg. 1), or None when the clip
    is absent. The frames between the keys are what keyframe flow goes through."""
    path = VIDEOS / f"{name}.mp4"
    if not path.is_file():
        print(f"{name}: {path} not found, skipped")
        return None
    clip = read_video(path, short_side=resolution)
    return clip.frames, select_keyframes(frame_distances(clip.frames), s_min, s_max)[:n]


def batch_correspondence(frames: np.ndarray, keys: list[int], pipe, flow: str = "keyframe"):
    """The correspondence of the batch ``frames[keys]`` as translate_video builds it (``flow="keyframe"``: through the
    frames in between, the attention's "area" token rule), or as before keyframe flow (``"direct"``: DIS straight
    between the keys, "any" pixel occludes a token for attention too), with the config's rules in each case."""
    from fresco_v2v.correspondence import build_correspondence
    from fresco_v2v.flow import keyframe_flows, sequence_flows

    if flow == "direct":
        flows, rule = sequence_flows(frames[keys]), "any"
    else:
        flows, rule = keyframe_flows(frames[keys[0] : keys[-1] + 1], keys), "area"
    return build_correspondence(frames[keys], flows, factors=pipe.decoder_factors, attention_occlusion=rule), rule


def with_token_rule(cfg, rule: str):
    """A FrescoConfig whose attention token rule is ``rule`` (the pipeline checks it against the correspondence)."""
    import dataclasses

    return dataclasses.replace(cfg, attention=dataclasses.replace(cfg.attention, token_occlusion=rule))


def _add_flow_argument(ap) -> None:
    ap.add_argument(
        "--flow",
        choices=("keyframe", "direct"),
        default="keyframe",
        help="keyframe: through the frames in between, area token rule (translate_video's); direct: DIS straight "
        "between the keys with the any-pixel rule (before keyframe flow)",
    )


def add_run_arguments(ap, resolution: int = 256, steps: int = 10) -> None:
    """The options every pipeline benchmark takes."""
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--clips", nargs="*", default=list(CLIPS))
    ap.add_argument("--frames", type=int, default=8, help="keyframes in the batch (N)")
    ap.add_argument("--resolution", type=int, default=resolution)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    ap.add_argument("--prompt", default=None, help="target prompt (default: the script's; 'a painting' for toy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    _add_flow_argument(ap)


def load_benchmark_pipeline(args):
    from fresco_v2v.models import builtin_model, load_pipeline

    controlnets = [args.model] if builtin_model(args.model) else ["lllyasviel/sd-controlnet-canny"]
    return load_pipeline(args.model, controlnets, device=args.device, seed=args.seed)


def add_fresco_overrides_argument(ap) -> None:
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change a FrescoConfig field in every FRESCO variant, e.g. optimization.spatial_norm=l1 "
        "reference.controlnet=true (values as JSON, else text)",
    )


def with_overrides(cfg, items: list[str]):
    """``cfg`` (a FrescoConfig) with each "section.field=value" of ``items`` replaced (value parsed as JSON)."""
    import dataclasses
    import json

    for item in items:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        part = getattr(cfg, section)
        if name not in {f.name for f in dataclasses.fields(part)}:
            raise SystemExit(f"--set {item}: {section} has no field {name!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{name: value})})
    return cfg.validate()
