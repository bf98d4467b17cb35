"""The paper's Table 2 ablation on real clips: flow-warped Pixel-MSE of consecutive translated keyframes per variant.

    python benchmarks/ablation.py [--model tiny] [--clips dog car-turn ...] [--frames 8] [--resolution 256]
                                  [--steps 10] [--strength 0.75] [--json]

Variants (paper §4.2): ``baseline`` cross-frame attention only; ``w_temp`` + the temporal parts (temporal-guided
attention, L_temp); ``w_spat`` + the spatial parts (spatial-guided attention, L_spat); ``w_attn`` + both guided
attentions; ``w_opt`` + feature optimization (L_temp + L_spat); ``full`` everything. Each variant translates the same
N keyframes (Alg. 1, s_min 2, s_max 6) with the same seed and the same correspondence (``--flow keyframe``, the
default: keyframe flow through the frames in between, as translate_video builds it; ``--flow direct``: DIS straight
between the keys with the any-pixel token rule, what ran before keyframe flow); Pixel-MSE comes from
``fresco_v2v.metrics.evaluate_frames`` (the code path of ``fresco evaluate``). With the default tiny random model the
frames are noise-like by design: the figure measures temporal coherence, not image quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from common import (
    add_run_arguments,
    batch_correspondence,
    keyframe_batch,
    load_benchmark_pipeline,
    machine_line,
    with_token_rule,
)

from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig
from fresco_v2v.metrics import evaluate_frames

PROMPT = "a painting of a dog in the style of van gogh"


def variants() -> dict[str, FrescoConfig]:
    off = AttentionConfig(spatial_guided=False, cross_frame=True, temporal_guided=False)
    no_opt = OptimizationConfig(enabled=False)
    r = dataclasses.replace
    return {
        "baseline": FrescoConfig(off, no_opt),
        "w_temp": FrescoConfig(r(off, temporal_guided=True), OptimizationConfig(spatial=False)),
        "w_spat": FrescoConfig(r(off, spatial_guided=True), OptimizationConfig(temporal=False)),
        "w_attn": FrescoConfig(r(off, spatial_guided=True, temporal_guided=True), no_opt),
        "w_opt": FrescoConfig(off, OptimizationConfig()),
        "full": FrescoConfig(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--json", action="store_true", help="also print {clip: {variant: pixel_mse}} on the last line")
    args = ap.parse_args()

    pipe = load_benchmark_pipeline(args)
    prompt = args.prompt or ("a painting" if args.model.startswith("toy") else PROMPT)
    print(machine_line(pipe, args.model))
    print(
        f"N={args.frames} keyframes at short side {args.resolution}, {args.steps} steps, strength {args.strength}, "
        f"guidance {args.guidance}, seed {args.seed}, prompt '{prompt}', flow {args.flow}"
    )
    names = list(variants())
    print(f"{'clip':<32}" + "".join(f"{n:>11}" for n in names) + "   full<baseline   s/variant")
    results: dict[str, dict[str, float]] = {}
    for clip_name in args.clips:
        loaded = keyframe_batch(clip_name, args.resolution, args.frames)
        if loaded is None:
            continue
        video, keys = loaded
        frames = video[keys]
        corr, rule = batch_correspondence(video, keys, pipe, args.flow)
        row: dict[str, float] = {}
        t0 = time.perf_counter()
        for name, cfg in variants().items():
            out = pipe(
                frames,
                prompt,
                num_inference_steps=args.steps,
                strength=args.strength,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(args.seed),
                fresco=with_token_rule(cfg, rule),
                correspondence=corr,
            )
            row[name] = evaluate_frames(frames, out.frames, device="cpu").pixel_mse
        per = (time.perf_counter() - t0) / len(row)
        results[clip_name] = row
        ok = "yes" if row["full"] < row["baseline"] else "NO"
        print(f"{clip_name:<32}" + "".join(f"{row[n]:>11.5f}" for n in names) + f"   {ok:>13}   {per:8.1f}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
