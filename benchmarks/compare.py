"""Table 1-style comparison with the paper's metrics, one code path with `fresco evaluate`.

    python benchmarks/compare.py [--model tiny] [--clip-model ID_OR_FOLDER] [--clips ...] [--frames 8]
                                 [--resolution 256] [--steps 10] [--json]

Methods on the same N keyframes (Alg. 1, s_min 2, s_max 6), same seed: ``per_frame`` (ControlNet img2img on each
frame alone: every FRESCO part off), ``cross_frame`` (cross-frame attention only, the baseline of §4.2) and
``fresco`` (everything on). Metrics from ``fresco_v2v.metrics.evaluate_frames``: Pixel-MSE always; Tem-Con, Fram-Acc
(target prompt vs the clip's caption) and Spat-Con when ``--clip-model`` is given. With the default tiny random model
the frames are noise-like by design; with real weights the table is the paper's Table 1 protocol on our clips.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import (
    CAPTIONS,
    add_run_arguments,
    batch_correspondence,
    keyframe_batch,
    load_benchmark_pipeline,
    machine_line,
    with_token_rule,
)

from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig
from fresco_v2v.metrics import METRIC_NAMES, METRICS, evaluate_frames, load_clip

PROMPT = "a painting in the style of van gogh"
METHODS = {
    "per_frame": FrescoConfig(
        AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
        OptimizationConfig(enabled=False),
    ),
    "cross_frame": FrescoConfig(
        AttentionConfig(spatial_guided=False, temporal_guided=False), OptimizationConfig(enabled=False)
    ),
    "fresco": FrescoConfig(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--clip-model", default=None, help="CLIP hub id or folder for Tem-Con, Fram-Acc, Spat-Con")
    ap.add_argument("--json", action="store_true", help="also print {clip: {method: {metric: value}}} last")
    args = ap.parse_args()

    pipe = load_benchmark_pipeline(args)
    prompt = args.prompt or ("a painting" if args.model.startswith("toy") else PROMPT)
    clip_model = load_clip(args.clip_model, device="cpu") if args.clip_model else None
    print(machine_line(pipe, args.model))
    print(
        f"N={args.frames} keyframes at short side {args.resolution}, {args.steps} steps, prompt {prompt!r}, "
        f"guidance {args.guidance}; "
        f"CLIP: {args.clip_model or 'none (Tem-Con, Fram-Acc, Spat-Con unavailable)'}"
    )
    print(f"{'clip':<32}{'method':<13}" + "".join(f"{METRIC_NAMES[m]:>11}" for m in METRICS))
    results: dict = {}
    for name in args.clips:
        loaded = keyframe_batch(name, args.resolution, args.frames)
        if loaded is None:
            continue
        video, keys = loaded
        frames = video[keys]
        corr, rule = batch_correspondence(video, keys, pipe, args.flow)
        results[name] = {}
        for method, cfg in METHODS.items():
            out = pipe(
                frames,
                prompt,
                num_inference_steps=args.steps,
                strength=args.strength,
                guidance_scale=args.guidance,
                fresco=with_token_rule(cfg, rule),
                generator=torch.Generator().manual_seed(args.seed),
                correspondence=corr,
            )
            r = evaluate_frames(
                frames, out.frames, prompt=prompt, source_prompt=CAPTIONS.get(name), clip_model=clip_model
            )
            results[name][method] = {m: getattr(r, m) for m in METRICS}
            cells = "".join(f"{v:>11.4f}" if v is not None else f"{'n/a':>11}" for v in results[name][method].values())
            print(f"{name:<32}{method:<13}{cells}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
