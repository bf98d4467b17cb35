"""How strongly L_spat pulls against L_temp (eq. 4-6) in each decoder block: ours, the authors' code, the paper.

    python benchmarks/loss_balance.py [--model toy] [--clips boxer-punching-towards-camera car-turn] [--frames 8]
                                      [--json]

Adam is invariant to a constant factor on the whole loss, so only the balance of the two terms matters. Written on
our scale (T_b, T_f: the means over pairs x C x h x w of the masked L1 of eq. 5 in each direction; S2, S1: the means
over N x L x L of the squared / absolute Gram differences of eq. 6), the three losses are, up to a constant factor:

- ours (default):    T_b + 50 S2
- the authors' code: T_b + T_f + 50 N/(N-1) S1, plus a wrap-around pair (frame N-1 with frame 0) that we leave out
  (their 2 x mean over N pairs of both directions + 100 x the L1 mean of the Grams)
- the paper (sums):  T_b + 50 N/(N-1) (L/C) S2, where L/C (tokens / channels) is 0.05, 0.2, 0.8 and 6.4 in
  SD1.5's four decoder blocks at 512x512: the paper's balance depends on the block and on the resolution.

The pull of each term is measured as the norm of its gradient with respect to the decoder features f at the start
of the optimization (Adam then rescales per element, but the ratio of the terms' gradients is what decides where
f moves). The features are the real ones: a toy-world batch (N keyframes by Alg. 1, keyframe-flow correspondence)
translated with the default config; every call of the feature optimization is recorded and the terms are evaluated
on its input. Per block the script prints mean |d| and rms d of the Gram differences and the ratio
|grad of the spatial term| / |grad of the temporal term| for each loss, averaged over the optimized steps.
Every figure says machine, device, dtype and threads in its header.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from unittest import mock

import torch
from common import batch_correspondence, keyframe_batch, load_benchmark_pipeline, machine_line

from fresco_v2v import optimization
from fresco_v2v import toyworld as tw
from fresco_v2v.config import FrescoConfig
from fresco_v2v.losses import normalize_tokens, temporal_consistency_loss


def term_gradients(f: torch.Tensor, num_frames: int, scale_corr, f_ref: torch.Tensor) -> dict[str, float]:
    """Gradient norms of T_b, T_b + T_f, S2 and S1 at f [G*N, C, h, w], and the Gram difference statistics."""
    groups = f.shape[0] // num_frames
    ref = f_ref.float() if f_ref.shape[0] == f.shape[0] else f_ref.float().repeat(groups, 1, 1, 1)
    b = normalize_tokens(ref)
    gram_ref = b @ b.transpose(1, 2)  # [G*N, L, L]

    def grad_norm(fn) -> float:
        x = f.detach().float().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(x), x)
        return float(g.norm())

    def temporal(x: torch.Tensor, both: bool) -> torch.Tensor:
        xs = x.view(groups, num_frames, *x.shape[1:])
        vis_b, vis_f = scale_corr.visible_mask(), ~scale_corr.occ_fwd
        return (
            sum(
                temporal_consistency_loss(
                    xs[g], scale_corr.flow_bwd, vis_b, scale_corr.flow_fwd if both else None, vis_f if both else None
                )
                for g in range(groups)
            )
            / groups
        )

    def gram_diff(x: torch.Tensor) -> torch.Tensor:
        a = normalize_tokens(x)
        return a @ a.transpose(1, 2) - gram_ref

    with torch.enable_grad(), torch.inference_mode(False):
        d = gram_diff(f.detach().float())
        return {
            "mean_abs_d": float(d.abs().mean()),
            "rms_d": float(d.pow(2).mean().sqrt()),
            "T_b": grad_norm(lambda x: temporal(x, False)),
            "T_bf": grad_norm(lambda x: temporal(x, True)),
            "S2": grad_norm(lambda x: gram_diff(x).pow(2).mean()),
            "S1": grad_norm(lambda x: gram_diff(x).abs().mean()),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--clips", nargs="*", default=list(tw.HELD_OUT_CLIPS))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=tw.TOY_STEPS)
    ap.add_argument("--strength", type=float, default=tw.TOY_STRENGTH)
    ap.add_argument("--guidance", type=float, default=tw.TOY_GUIDANCE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.device, args.resolution = "cpu", tw.TOY_SIZE
    pipe = load_benchmark_pipeline(args)
    print(machine_line(pipe, args.model))
    print(
        f"'{tw.PAINTING}', {args.frames} keyframes at {args.resolution} px, {args.steps} steps at strength "
        f"{args.strength}, guidance {args.guidance}, seed {args.seed}; default FRESCO config, lambda_spat 50"
    )
    cfg = FrescoConfig()
    lam = cfg.optimization.lambda_spat
    results = {}
    for name in args.clips:
        batch = keyframe_batch(name, args.resolution, args.frames, s_min=3, s_max=10)
        if batch is None:
            continue
        frames, keys = batch
        corr, _ = batch_correspondence(frames, keys, pipe)
        n = len(keys)
        per_block: dict[tuple[int, int], list[dict]] = defaultdict(list)
        real = optimization.optimize_features

        def spy(f, num_frames, config, scale_corr, f_ref, per_block=per_block, real=real):
            if scale_corr is not None and f_ref is not None:
                per_block[(f.shape[1], f.shape[2] * f.shape[3])].append(
                    term_gradients(f, num_frames, scale_corr, f_ref)
                )
            return real(f, num_frames, config, scale_corr, f_ref)

        with mock.patch.object(optimization, "optimize_features", spy):
            pipe(
                frames[keys],
                tw.PAINTING,
                negative_prompt="",
                num_inference_steps=args.steps,
                strength=args.strength,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(args.seed),
                fresco=cfg,
                correspondence=corr,
            )
        print(f"\n{name}: keyframes {keys}")
        print(
            f"  {'C':>5} {'L':>5} {'L/C':>6} {'mean|d|':>8} {'rms d':>7}   spatial/temporal gradient: "
            f"{'ours':>8} {'authors':>8} {'paper':>8}"
        )
        rows = {}
        for (c, length), recs in sorted(per_block.items(), key=lambda kv: kv[0][1]):
            avg = {k: sum(r[k] for r in recs) / len(recs) for k in recs[0]}
            ours = lam * avg["S2"] / avg["T_b"]
            authors = lam * n / (n - 1) * avg["S1"] / avg["T_bf"]
            paper = lam * n / (n - 1) * (length / c) * avg["S2"] / avg["T_b"]
            rows[f"{c}x{length}"] = {**avg, "ours": ours, "authors": authors, "paper": paper, "steps": len(recs)}
            print(
                f"  {c:>5} {length:>5} {length / c:>6.3f} {avg['mean_abs_d']:>8.4f} {avg['rms_d']:>7.4f}   "
                f"{'':>26}{ours:>8.3f} {authors:>8.3f} {paper:>8.3f}"
            )
        results[name] = rows
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
