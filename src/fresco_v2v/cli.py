"""The ``fresco`` command: a thin layer that parses arguments, calls the library and maps errors to exit codes.

Exit codes: 0 success, 2 a :class:`~fresco_v2v.errors.FrescoError` (bad input or configuration; the message says
what to change), 130 interrupted. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import FrescoError
from .keyframes import DEFAULT_BATCH_SIZE, DEFAULT_S_MAX, DEFAULT_S_MIN, frame_distances, plan_batches, select_keyframes
from .video import DEFAULT_SHORT_SIDE, read_video


def _cmd_keyframes(args: argparse.Namespace) -> int:
    clip = read_video(args.input, short_side=args.resolution, max_frames=args.max_frames)
    keys = select_keyframes(frame_distances(clip.frames), args.s_min, args.s_max)
    batches = plan_batches(keys, args.batch_size)
    print(
        f"{args.input}: {clip.num_frames} frames at {clip.fps} fps ({float(clip.fps):.3f}), "
        f"{clip.size[0]}x{clip.size[1]} after resizing"
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


def _cmd_demo(args: argparse.Namespace) -> int:
    print("fresco demo: the end-to-end demo lands with the command-line issue; until then run `make test`.")
    return 0


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

    d = sub.add_parser("demo", help="run the whole pipeline offline on a generated clip")
    d.add_argument("-o", "--output", default="out/demo")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
