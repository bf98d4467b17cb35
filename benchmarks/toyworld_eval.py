"""End-to-end quality in the toy world: the whole pipeline on held-out clips, scored against the true painting.

    python benchmarks/toyworld_eval.py [--model toy] [--clips boxer-punching-towards-camera car-turn]
                                       [--variants per_frame baseline ... full] [--max-frames 48] [--json]

For each clip (at 128x128, the toy world's size) the ground truth is known: every frame through ``cv2.stylization``
(``fresco_v2v.toyworld.painting``). Variants:

- ``per_frame``: every frame translated on its own (SDEdit with its own noise, every FRESCO part off), no
  keyframes and no propagation;
- the paper's Table 2 columns, each through ``fresco translate``'s code path (``runner.translate_video``: Alg. 1
  keyframes, batches with anchors, the FRESCO parts switched as named, propagation): ``baseline`` (cross-frame
  attention only), ``w_temp``, ``w_spat``, ``w_attn``, ``w_opt``, ``full``; the same configs as
  ``benchmarks/ablation.py``.

Printed per clip and variant: PSNR and SSIM of all frames to the true painting video, Pixel-MSE (the paper's
flow-warped consecutive-frame MSE, ``fresco_v2v.metrics``), the flicker ratio (mean |f_t+1 - warp(f_t)| on visible
pixels along the source flow, divided by the same figure for the true painting video: 1 = as steady as the truth)
and seconds. ``--json``: one object ``{clip: {variant: {psnr, ssim, pixel_mse, flicker_ratio, s}}}`` on the last
line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import variants as table2_variants  # noqa: E402
from common import VIDEOS, add_fresco_overrides_argument, with_overrides  # noqa: E402
from propagation import flicker, ssim  # noqa: E402

from fresco_v2v import toyworld as tw  # noqa: E402
from fresco_v2v.config import FrescoConfig, RunConfig, StepWindow  # noqa: E402
from fresco_v2v.flow import sequence_flows  # noqa: E402
from fresco_v2v.metrics import pixel_mse_per_pair  # noqa: E402
from fresco_v2v.models import load_pipeline  # noqa: E402
from fresco_v2v.runner import translate_video  # noqa: E402
from fresco_v2v.video import read_video  # noqa: E402

VARIANTS = ("per_frame", "baseline", "w_temp", "w_spat", "w_attn", "w_opt", "full")


def score(frames: np.ndarray, out: np.ndarray, truth: np.ndarray, flows, truth_flicker: float) -> dict:
    return {
        "psnr": tw.psnr(out, truth),
        "ssim": float(np.mean([ssim(o, g) for o, g in zip(out, truth)])),
        "pixel_mse": float(pixel_mse_per_pair(frames, out).mean()),
        "flicker_ratio": flicker(list(out), flows.bwd, flows.occ_bwd) / truth_flicker,
    }


def with_window_axis(cfg: FrescoConfig, axis: str) -> FrescoConfig:
    """The config with the optimization window [0, 0.75) on ``axis`` (the default's axis is "noise")."""
    window = StepWindow(0.0, 0.75, axis)
    return dataclasses.replace(cfg, optimization=dataclasses.replace(cfg.optimization, window=window))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy", help="'toy' (the bundled checkpoint) or toy:PATH")
    ap.add_argument("--clips", nargs="*", default=list(tw.HELD_OUT_CLIPS))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--max-frames", type=int, default=48)
    ap.add_argument("--strength", type=float, default=tw.TOY_STRENGTH)
    ap.add_argument("--steps", type=int, default=tw.TOY_STEPS)
    ap.add_argument("--guidance", type=float, default=tw.TOY_GUIDANCE)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--s-min", type=int, default=3, help="Alg. 1 minimum keyframe interval (short 10 fps clips)")
    ap.add_argument("--s-max", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--shared-step-noise", action="store_true", help="one per-step noise draw per batch (default: per frame)"
    )
    ap.add_argument(
        "--opt-window-axis",
        choices=("noise", "steps"),
        default="noise",
        help="optimization on t >= 0.25 T (noise, the authors', default) or on the first 75%% of the steps run",
    )
    add_fresco_overrides_argument(ap)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.model, [args.model], device="cpu")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: {pipe.device}; dtype: {pipe.unet.dtype}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model: {args.model} (toy world, 128x128)"
    )
    print(
        f"'{tw.PHOTO}' -> '{tw.PAINTING}': strength {args.strength}, {args.steps} steps, guidance {args.guidance}, "
        f"batches of {args.batch_size}, keyframes s_min {args.s_min} s_max {args.s_max}, seed {args.seed}, "
        f"first {args.max_frames} frames" + (f"; FRESCO changes: {' '.join(args.set)}" if args.set else "")
    )
    fresco_cfgs = table2_variants()
    cols = ("psnr", "ssim", "pixel_mse", "flicker_ratio", "s")
    results: dict[str, dict[str, dict]] = {}
    for clip_name in args.clips:
        path = VIDEOS / f"{clip_name}.mp4"
        if not path.is_file():
            print(f"{clip_name}: {path} not found, skipped")
            continue
        frames = read_video(path, short_side=tw.TOY_SIZE, max_frames=args.max_frames).frames
        truth = tw.ground_truth(frames)
        flows = sequence_flows(frames)
        truth_flicker = flicker(list(truth), flows.bwd, flows.occ_bwd)
        row = {
            "photo": {
                **score(frames, frames, truth, flows, truth_flicker),
                "s": 0.0,
            }
        }
        print(f"\n{clip_name}: {len(frames)} frames; the input photo scores as a reference row")
        print(f"  {'variant':<10}" + "".join(f"{c:>14}" for c in cols))
        print(f"  {'photo':<10}" + "".join(f"{row['photo'][c]:>14.4f}" for c in cols))
        for name in args.variants:
            t0 = time.perf_counter()
            if name == "per_frame":
                out = tw.translate_per_frame(
                    pipe,
                    frames,
                    strength=args.strength,
                    steps=args.steps,
                    guidance_scale=args.guidance,
                    seed=args.seed,
                )
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = RunConfig(
                        input=str(path),
                        prompt=tw.PAINTING,
                        added_prompt="",  # the toy model knows only its captions
                        negative_prompt="",
                        output=tmp,
                        model=args.model,
                        resolution=tw.TOY_SIZE,
                        max_frames=args.max_frames,
                        strength=args.strength,
                        steps=args.steps,
                        guidance_scale=args.guidance,
                        batch_size=args.batch_size,
                        s_min=args.s_min,
                        s_max=args.s_max,
                        seed=args.seed,
                        device="cpu",
                        fresco=with_overrides(with_window_axis(fresco_cfgs[name], args.opt_window_axis), args.set),
                        shared_step_noise=args.shared_step_noise,
                    )
                    out = np.stack(
                        translate_video(cfg, overwrite=True, progress=False, pipeline=pipe, keep_frames=True).frames
                    )
            seconds = time.perf_counter() - t0
            row[name] = {**score(frames, out, truth, flows, truth_flicker), "s": seconds}
            print(f"  {name:<10}" + "".join(f"{row[name][c]:>14.4f}" for c in cols), flush=True)
        results[clip_name] = row
    if args.json:
        rounded = {
            c: {v: {k: round(x, 5) for k, x in m.items()} for v, m in r.items() if v != "photo"}
            for c, r in results.items()
        }
        print(json.dumps(rounded))


if __name__ == "__main__":
    main()
