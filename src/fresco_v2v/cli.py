"""The ``fresco`` command: a thin layer that parses arguments, calls the library and maps errors to exit codes.

Exit codes: 0 success, 2 a :class:`~fresco_v2v.errors.FrescoError` (bad input or configuration; the message says
what to change), 130 interrupted. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError, FrescoError, InputError
from .keyframes import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_S_MAX,
    DEFAULT_S_MIN,
    plan_batches,
    scan_distances,
    select_keyframes,
)
from .video import DEFAULT_SHORT_SIDE, describe_rate


def _cmd_keyframes(args: argparse.Namespace) -> int:
    # one decoding pass that keeps only Alg. 1's distances: memory does not grow with the video
    info, distances = scan_distances(
        args.input, short_side=args.resolution, max_frames=args.max_frames, progress=not args.quiet
    )
    keys = select_keyframes(distances, args.s_min, args.s_max)
    batches = plan_batches(keys, args.batch_size)
    print(
        f"{args.input}: {info.num_frames} frames at {describe_rate(info.fps, info.times is not None)}, "
        f"{info.size[0]}x{info.size[1]} after resizing"
    )
    print(f"keyframes ({len(keys)}, s_min={args.s_min}, s_max={args.s_max}): {' '.join(map(str, keys))}")
    for i, b in enumerate(batches):
        print(f"batch {i}: {' '.join(map(str, b))}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from .metrics import HIGHER_IS_BETTER, METRIC_NAMES, METRICS, evaluate_videos
    from .models import resolve_device

    device = resolve_device(args.device)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, unit="frame", leave=False, disable=None)
        bars[stage].update(done - bars[stage].n)

    try:
        r = evaluate_videos(
            args.input,
            args.output,
            short_side=args.resolution,
            max_frames=args.max_frames,
            prompt=args.prompt,
            source_prompt=args.source_prompt,
            clip_model=args.clip_model,
            feature_model=args.feature_model,
            device=device,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    print(
        f"{args.input} -> {args.output}: {r.num_frames} frames, {r.size[0]}x{r.size[1]}, flow {r.flow}, "
        f"CLIP {r.clip_model or 'none'}, Spat-Con features {r.feature_model or 'none'}"
    )
    digits = {"fram_acc": 4, "tem_con": 4, "pixel_mse": 6, "spat_con": 6}
    print(f"{'metric':<10} {'better':<7} value")
    for key in METRICS:
        value = getattr(r, key)
        shown = f"{value:.{digits[key]}f}" if value is not None else f"unavailable: {r.unavailable[key]}"
        print(f"{METRIC_NAMES[key]:<10} {'higher' if HIGHER_IS_BETTER[key] else 'lower':<7} {shown}")
    if args.json:
        print(json.dumps(r.to_json_dict()))
    return 0


# -- translate ------------------------------------------------------------------------------------------------------

#: FRESCO switches of the command line -> (section, field, value when the flag is given).
_FRESCO_SWITCHES = {
    "no_spatial_attention": ("attention", "spatial_guided", False),
    "no_cross_frame_attention": ("attention", "cross_frame", False),
    "no_temporal_attention": ("attention", "temporal_guided", False),
    "no_optimization": ("optimization", "enabled", False),
    "no_temporal_loss": ("optimization", "temporal", False),
    "no_spatial_loss": ("optimization", "spatial", False),
}
#: FRESCO values of the command line -> (section, field, argparse type).
_FRESCO_VALUES = {
    "lambda_s": ("attention", "lambda_s", float),
    "lambda_t": ("attention", "lambda_t", float),
    "lambda_spat": ("optimization", "lambda_spat", float),
    "opt_iterations": ("optimization", "iterations", int),
    "opt_lr": ("optimization", "learning_rate", float),
}
_RUN_FLAGS = (
    "input",
    "prompt",
    "output",
    "model",
    "lora",
    "controlnet",
    "controlnet_scale",
    "canny_low",
    "canny_high",
    "depth_estimator",
    "hed_annotator",
    "strength",
    "steps",
    "guidance_scale",
    "negative_prompt",
    "added_prompt",
    "seed",
    "resolution",
    "max_frames",
    "batch_size",
    "s_min",
    "s_max",
    "flow",
    "device",
    "dtype",
    "colorize",
    "freeu",
    "vae",
    "allow_pickle",
    "background_smoothing",
    "foreground_masks",
    "shared_step_noise",
    "clip_skip",
    "ip_adapter",
    "ip_adapter_image_encoder",
    "style_image",
)


def parse_options(items: Sequence[str] | None, flag: str) -> dict:
    """NAME=VALUE strings -> {NAME: value}, each value read as YAML (true, 0.1, dis-fine, null)."""
    import yaml

    out: dict = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(flag, "NAME=VALUE (e.g. colour_lookup=true)", item)
        try:
            out[name.strip()] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):  # ValueError: an integer past Python's limit on digits
            raise ConfigError(flag, "a value YAML can read (true, 0.1, a text)", item) from None
    return out


def _freeu_values(text: str) -> tuple[float, ...]:
    """'1.2,1.4,0.9,0.2' -> (1.2, 1.4, 0.9, 0.2); the count and ranges are checked with the rest of the config."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected four numbers B1,B2,S1,S2, got {text!r}") from None


def run_config_from_args(args: argparse.Namespace):
    """RunConfig = defaults <- the --config file <- the flags given on the command line."""
    from .config import RunConfig

    data = options_from_args(args)
    for required in ("input", "prompt"):
        if not data.get(required):
            raise ConfigError(required, "a value (on the command line or in --config)", data.get(required))
    return RunConfig.from_dict(data).validate()


def options_from_args(args: argparse.Namespace) -> dict:
    """The run options of the --config file and the flags given (flags win), as plain data: a translate's config,
    or every video's defaults in `fresco batch`."""
    data = _config_file(args.config) if getattr(args, "config", None) else {}
    given = vars(args)
    for name in _RUN_FLAGS:
        if name in given:
            data[name] = given[name]
    if given.get("no_propagation"):
        data["propagation"] = False
    if given.get("propagation_option"):
        expected = "a mapping of PropagationConfig names to values"
        opts = _mapping(data, "propagation_options", "propagation_options", expected)
        data["propagation_options"] = opts | parse_options(given["propagation_option"], "--propagation-option")
    for flag, (section, fld, value) in _FRESCO_SWITCHES.items():
        if given.get(flag):
            _fresco_section(data, section)[fld] = value
    for flag, (section, fld, _) in _FRESCO_VALUES.items():
        if flag in given:
            _fresco_section(data, section)[fld] = given[flag]
    return data


def _config_file(path: str) -> dict:
    """The options of a --config file: a YAML mapping, or a run.json (which holds them under "config")."""
    import yaml

    try:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
    except OSError as e:
        raise InputError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer past Python's limit on digits
        raise InputError(f"{path}: not valid YAML ({e})") from None
    loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping of option names to values")
    return dict(loaded)


def _mapping(data: dict, key: str, name: str, expected: str) -> dict:
    """``data[key]`` as a (copied) mapping that flags can add to; absent or null: an empty one. ``name``: its path."""
    from .validation import describe

    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(name, expected, value, shown=describe(value))
    return dict(value)


def _fresco_section(data: dict, section: str) -> dict:
    """The ``fresco.<section>`` mapping of ``data``, made (or copied) so that a flag can set a field in it."""
    fresco = data["fresco"] = _mapping(data, "fresco", "fresco", "a mapping of FRESCO sections")
    fresco[section] = _mapping(fresco, section, f"fresco.{section}", "a mapping of option names to values")
    return fresco[section]


def _cmd_translate(args: argparse.Namespace) -> int:
    from .models import model_note
    from .runner import rate_text, translate_video

    cfg = run_config_from_args(args)
    note = model_note(cfg.model)
    if note:
        print(f"fresco: {note}.")
    try:
        result = translate_video(cfg, overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        # every finished batch was saved as it finished (a batch is never half written): say how to use them
        from pathlib import Path

        from .run_folder import STATE_DIR, resume_hint

        finished = len(list((Path(cfg.output) / STATE_DIR).glob("batch_*.pt")))
        if finished:
            print(f"fresco: interrupted; {resume_hint(Path(cfg.output), finished)}", file=sys.stderr)
        else:
            print("fresco: interrupted (no keyframe batch had finished)", file=sys.stderr)
        return 130
    if not args.quiet:
        r = result.report
        print(
            f"{result.video}: {r['frames']} frames at {rate_text(r)}, {r['size'][0]}x{r['size'][1]}, audio "
            f"{r['audio']}; {len(result.keyframes)} keyframes in {result.output_dir / 'keyframes'}; "
            f"report {result.output_dir / 'run.json'}"
        )
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from .cluster import read_manifest
    from .cluster.run import require_ray, translate_many

    require_ray()  # before any work: the extra it needs
    entries = read_manifest(args.manifest, args.output_root, options_from_args(args))
    report = translate_many(
        entries,
        args.output_root,
        address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        progress=not args.quiet,
    )
    width = max(len(r["name"]) for r in report)
    for r in report:
        sec = r["seconds"]
        stages = f"translate {sec['translate']:.0f} s, propagate {sec['propagate']:.0f} s"
        detail = r["error"] if r["error"] else f"{len(r['keyframes'])} keyframes, {stages} -> {r['output']}"
        print(f"{r['name']:<{width}}  {r['status']:<6}  {detail}")
    failed = sum(r["status"] != "done" for r in report)
    print(f"fresco batch: {len(report) - failed} of {len(report)} videos done; {args.output_root}/batch.json")
    return 2 if failed else 0


def _cmd_propagate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import propagation_config
    from .propagate.run import keyframe_files, propagate_video

    options = parse_options(args.option, "--option")
    propagation_config(options, "options")  # a wrong option fails before the folder is read
    keydir = Path(args.keys)
    if not keydir.is_dir():
        raise InputError(f"{keydir}: no such folder of keyframes")
    named = keyframe_files(keydir.iterdir())
    if not named:
        raise InputError(f"{keydir}: no keyframe images named by frame index (e.g. 0000.png, 0012.png)")
    r = propagate_video(
        args.input,
        named,
        args.output,
        resolution=args.resolution,
        max_frames=args.max_frames,
        device=args.device,
        options=options,
    )
    print(f"{r.video}: {r.frames} frames at {r.rate} from {len(r.keyframes)} keyframes, audio {r.audio}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, progress=not args.quiet)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .webui import parse_auth, require_gradio

    require_gradio()  # before anything else: the extra it needs
    from . import webui_page

    exposed = args.share or args.host not in ("127.0.0.1", "localhost", "::1")
    if args.max_upload_mb < 1:
        raise ConfigError("max_upload_mb", "a whole number of megabytes >= 1", args.max_upload_mb)
    if args.models_root is not None and not Path(args.models_root).is_dir():
        raise ConfigError("models_root", "an existing folder", args.models_root)
    auth = parse_auth(args.auth) if args.auth is not None else None
    if exposed and auth is None and not args.no_auth:
        raise ConfigError(
            "auth",
            "--auth USER:PASSWORD (or --no-auth) when the page is served beyond this machine (--share or --host "
            f"{args.host})",
            None,
        )
    print(f"fresco ui: runs are saved under {Path(args.output_root).resolve()}")
    if exposed and auth is None:
        print(
            "fresco ui: warning: the page is reachable from other machines without a login (--no-auth); whoever "
            "opens it can use this machine's GPU and the models under --models-root"
        )
    webui_page.launch(
        args.host,
        args.port,
        args.output_root,
        args.share,
        auth=auth,
        public=exposed,
        models_root=args.models_root,
        max_upload_mb=args.max_upload_mb,
    )
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    from .config import CONTROLNET_TYPES, DEFAULT_MODEL
    from .models import resolve_device, resolve_dtype
    from .runner import package_versions

    for k, v in package_versions().items():
        print(f"{k:<14} {v}")
    try:
        from importlib.metadata import version

        ui = f"gradio {version('gradio')}"
    except Exception:  # PackageNotFoundError, or broken metadata
        ui = "not installed (pip install 'fresco-v2v[ui]')"
    print(f"{'web ui':<14} {ui}")
    dev = resolve_device("auto")
    print(
        f"{'device':<14} {dev} (default dtype {str(resolve_dtype('auto', dev)).removeprefix('torch.')}), "
        f"{torch_threads()} CPU threads"
    )
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        try_to_load_from_cache = None
    from .flow.gmflow import CHECKPOINT_NAME, find_checkpoint

    found_flow = find_checkpoint()
    where = "./model/, ./models/ or torch hub's checkpoints"
    flow_line = f"{found_flow} (--flow gmflow)" if found_flow else f"{CHECKPOINT_NAME} not found in {where}"
    print(f"{'gmflow':<14} {flow_line}" + ("" if found_flow else " (--flow dis needs none)"))
    for ident, fname in [(DEFAULT_MODEL, "model_index.json"), *((v, "config.json") for v in CONTROLNET_TYPES.values())]:
        found = try_to_load_from_cache(ident, fname) if try_to_load_from_cache else None
        print(f"{ident:<44} {'found in the local cache' if isinstance(found, str) else 'not downloaded'}")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _translate_parser(sub) -> None:
    """``fresco translate``: a flag per RunConfig field (the FRESCO values by their section's field), whose help and
    default come from the config classes (``_field_help``)."""
    from .config import RunConfig

    def run(name: str) -> str:  # the help of the flag of RunConfig field `name`
        return _field_help(RunConfig, name)

    t = sub.add_parser("translate", help="translate a video with a prompt (keyframes, FRESCO, propagation, audio)")
    S = argparse.SUPPRESS  # only the flags given override the --config file and the defaults
    t.add_argument("input", nargs="?", default=S, help=run("input"))
    t.add_argument("--prompt", default=S, help=run("prompt"))
    t.add_argument("-o", "--output", default=S, help=run("output"))
    _run_options(t)
    t.add_argument("--overwrite", action="store_true", help="start over in an output folder of another run")
    t.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    t.epilog = (
        "FRESCO switches: --no-spatial-attention --no-cross-frame-attention --no-temporal-attention "
        "--no-optimization --no-temporal-loss --no-spatial-loss"
    )
    t.set_defaults(func=_cmd_translate)


def _run_options(t) -> None:
    """The flags of the RunConfig fields but input, prompt and output: `fresco translate`'s, and `fresco batch`'s
    defaults for every video."""
    from .config import AttentionConfig, OptimizationConfig, RunConfig

    def run(name: str) -> str:  # the help of the flag of RunConfig field `name`
        return _field_help(RunConfig, name)

    S = argparse.SUPPRESS
    t.add_argument("--config", default=None, help="YAML file with the same option names (or a run.json)")
    t.add_argument("--model", default=S, help=run("model"))
    t.add_argument("--lora", action="append", default=S, help=run("lora"))
    t.add_argument("--controlnet", action="append", default=S, help=run("controlnet"))
    t.add_argument("--controlnet-scale", type=float, action="append", default=S, help=run("controlnet_scale"))
    t.add_argument("--canny-low", type=int, default=S, help=run("canny_low"))
    t.add_argument("--canny-high", type=int, default=S, help=run("canny_high"))
    t.add_argument("--depth-estimator", default=S, help=run("depth_estimator"))
    t.add_argument("--hed-annotator", default=S, help=run("hed_annotator"))
    t.add_argument("--strength", type=float, default=S, help=run("strength"))
    t.add_argument("--steps", type=int, default=S, help=run("steps"))
    t.add_argument("--guidance-scale", type=float, default=S, help=run("guidance_scale"))
    t.add_argument("--negative-prompt", default=S, help=run("negative_prompt"))
    t.add_argument("--added-prompt", default=S, help=run("added_prompt"))
    t.add_argument("--seed", type=int, default=S, help=run("seed"))
    t.add_argument("--resolution", type=int, default=S, help=run("resolution"))
    t.add_argument("--max-frames", type=int, default=S, help=run("max_frames"))
    t.add_argument("--batch-size", type=int, default=S, help=run("batch_size"))
    t.add_argument("--s-min", type=int, default=S, help=run("s_min"))
    t.add_argument("--s-max", type=int, default=S, help=run("s_max"))
    t.add_argument("--flow", default=S, help=run("flow"))
    t.add_argument("--device", default=S, help=run("device"))
    t.add_argument("--dtype", default=S, help=run("dtype"))
    t.add_argument("--no-propagation", action="store_true", help="keyframes only; other frames repeat the nearest")
    t.add_argument(
        "--propagation-option",
        action="append",
        metavar="NAME=VALUE",
        help="a PropagationConfig option, repeatable (e.g. colour_lookup=true for flat-colour styles)",
    )
    t.add_argument("--colorize", action="store_true", default=S, help=run("colorize"))
    t.add_argument(
        "--freeu", nargs="?", const=True, type=_freeu_values, default=S, metavar="B1,B2,S1,S2", help=run("freeu")
    )
    t.add_argument("--background-smoothing", type=float, default=S, help=run("background_smoothing"))
    t.add_argument("--foreground-masks", default=S, help=run("foreground_masks"))
    t.add_argument("--shared-step-noise", action="store_true", default=S, help=run("shared_step_noise"))
    t.add_argument("--vae", default=S, metavar="ID|PATH", help=run("vae"))
    t.add_argument("--clip-skip", type=int, default=S, metavar="N", help=run("clip_skip"))
    t.add_argument("--ip-adapter", default=S, metavar="ID|PATH[:SCALE]", help=run("ip_adapter"))
    t.add_argument("--ip-adapter-image-encoder", default=S, metavar="ID|FOLDER", help=run("ip_adapter_image_encoder"))
    t.add_argument("--style-image", default=S, metavar="PATH", help=run("style_image"))
    t.add_argument("--allow-pickle", action="store_true", default=S, help=run("allow_pickle"))
    for flag in _FRESCO_SWITCHES:
        section, fld, _ = _FRESCO_SWITCHES[flag]
        t.add_argument("--" + flag.replace("_", "-"), action="store_true", help=f"turn off {section}.{fld}")
    sections = {"attention": AttentionConfig, "optimization": OptimizationConfig}
    for flag, (section, fld, kind) in _FRESCO_VALUES.items():
        t.add_argument("--" + flag.replace("_", "-"), type=kind, default=S, help=_field_help(sections[section], fld))


def _batch_parser(sub) -> None:
    """``fresco batch``: a manifest of videos on Ray (``fresco_v2v.cluster``), the run flags as every video's
    defaults."""
    b = sub.add_parser("batch", help="translate every video of a manifest, on this machine's GPUs or a Ray cluster")
    b.add_argument("manifest", help="YAML list of {input, prompt, options} mappings, or CSV with a header row")
    b.add_argument("-o", "--output-root", required=True, help="folder of the videos' output folders (shared storage)")
    b.add_argument("--address", default=None, help="a Ray cluster: auto or ray://HOST:PORT (default: a local one)")
    b.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray instance (default: all)")
    b.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    _run_options(b)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_batch)


def _field_help(cls, name: str) -> str:
    """A flag's help: the config field's description and its default, so that neither is written twice."""
    from .validation import field_default, field_help

    default = field_default(cls, name)
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    shown = "" if default is None or isinstance(default, bool) or default == "" else f" (default {default})"
    return (field_help(cls, name) + shown).replace("%", "%%")  # argparse %-formats help texts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fresco", description="Zero-shot video translation after FRESCO (CVPR 2024).")
    p.add_argument("--version", action="version", version=f"fresco-v2v {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keyframes", help="print the keyframes (paper Alg. 1) and batches, without any model")
    k.add_argument("input", help="video file")
    k.add_argument("--s-min", type=int, default=DEFAULT_S_MIN, help="smallest keyframe interval (default %(default)s)")
    k.add_argument("--s-max", type=int, default=DEFAULT_S_MAX, help="largest keyframe interval (default %(default)s)")
    k.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="keyframes per batch, anchors included (default %(default)s, paper §4)",
    )
    k.add_argument("--resolution", type=int, default=DEFAULT_SHORT_SIDE, help="short side in px (default %(default)s)")
    k.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    k.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_cmd_keyframes)

    e = sub.add_parser("evaluate", help="the paper's Table 1 metrics (Pixel-MSE, Tem-Con, Fram-Acc, Spat-Con)")
    e.add_argument("--input", required=True, help="the source video")
    e.add_argument("--output", required=True, help="its translation (same frame count and size)")
    e.add_argument("--prompt", default=None, help="target prompt (Fram-Acc)")
    e.add_argument("--source-prompt", default=None, help="a caption of the input video (Fram-Acc)")
    e.add_argument(
        "--clip-model",
        default=None,
        help="CLIP hub id or local folder for Tem-Con, Fram-Acc and Spat-Con (e.g. openai/clip-vit-large-patch14); "
        "without it only Pixel-MSE is computed",
    )
    e.add_argument(
        "--feature-model",
        default=None,
        help="Spat-Con's network: a transformers vision model id or folder (default: the CLIP vision tower)",
    )
    e.add_argument("--resolution", type=int, default=None, help="resize both to this short side (default: as stored)")
    e.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each")
    e.add_argument("--device", default=None, help="torch device for the networks (default: the accelerator, or cpu)")
    e.add_argument("--json", action="store_true", help="also print the metrics as one JSON object on the last line")
    e.set_defaults(func=_cmd_evaluate)

    _translate_parser(sub)
    _batch_parser(sub)

    pr = sub.add_parser("propagate", help="propagate your own stylized keyframes (named by frame index) to a video")
    pr.add_argument("input", help="source video")
    pr.add_argument("--keys", required=True, help="folder of keyframes named NNNN.png by frame index")
    pr.add_argument("-o", "--output", default="propagated.mp4", help="output video (default propagated.mp4)")
    pr.add_argument(
        "--resolution", type=int, default=None, help="short side the keys were made at (default: the keys' own)"
    )
    pr.add_argument("--max-frames", type=int, default=None)
    pr.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    pr.add_argument(
        "--option",
        action="append",
        metavar="NAME=VALUE",
        help="a PropagationConfig option, repeatable (e.g. colour_lookup=true for flat-colour styles)",
    )
    pr.set_defaults(func=_cmd_propagate)

    d = sub.add_parser("demo", help="run the whole pipeline offline on a generated clip (toy-world model)")
    d.add_argument("-o", "--output", default="fresco-demo", help="output folder (default fresco-demo)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)

    u = sub.add_parser("ui", help="the web UI in your browser (needs: pip install 'fresco-v2v[ui]')")
    u.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s: this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    u.add_argument("--output-root", default="fresco-ui-runs", help="folder of the runs' outputs (default %(default)s)")
    u.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    u.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=None,
        help="a login for the page; required with --share or a host other than this machine (or --no-auth)",
    )
    u.add_argument("--no-auth", action="store_true", help="serve beyond this machine without a login (warned)")
    u.add_argument(
        "--models-root",
        default=None,
        help="beyond this machine, the model, LoRA, ControlNet, VAE, IP-Adapter, annotator, mask, style-image and flow "
        "fields take hub ids and paths under this folder only (default: hub ids only); on this machine every path is "
        "taken",
    )
    u.add_argument(
        "--max-upload-mb",
        type=int,
        default=2000,
        help="largest upload the page accepts, in MB (default %(default)s: a long 1080p clip)",
    )
    u.set_defaults(func=_cmd_ui)

    v = sub.add_parser("env", help="versions, device, and which known models are downloaded")
    v.set_defaults(func=_cmd_env)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:  # transformers warns at import that torchvision is missing; nothing here needs it
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except FrescoError as e:
        if args.debug:
            raise
        print(f"fresco: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fresco: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
