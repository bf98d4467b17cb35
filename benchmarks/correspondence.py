"""Time to build the FRESCO correspondence of one batch, vectorized vs. the naive per-pixel loop, in one run.

    python benchmarks/correspondence.py [--frames 8] [--size 512] [--clip ../shared/data/videos/dog.mp4] [--json]

Both builds start from the same pixel flows (estimated once, timed separately) and build every decoder scale
(factors 64, 32, 16, 8). The naive loop is the test oracle (tests/oracles.py); the outputs are checked equal
before any figure is printed. Issue target: vectorized >= 50x faster than the loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fresco_v2v.correspondence import DECODER_FACTORS, build_correspondence
from fresco_v2v.flow import sequence_flows
from fresco_v2v.keyframes import frame_distances, select_keyframes
from fresco_v2v.testing import moving_square_clip
from fresco_v2v.video import read_video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "videos" / "dog.mp4"


def load_oracle():
    # The oracle lives with the tests; load it by file path rather than touching sys.path.
    spec = importlib.util.spec_from_file_location("fresco_oracles", ROOT / "tests" / "oracles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def batch_frames(clip_path: Path, n: int, size: int) -> tuple[np.ndarray, str]:
    if clip_path.is_file():
        clip = read_video(clip_path, short_side=size)
        keys = select_keyframes(frame_distances(clip.frames), 5, 10)[:n]
        frames = clip.frames[keys]
        h, w = frames.shape[1:3]
        y, x = (h - size) // 2, (w - size) // 2
        return np.ascontiguousarray(frames[:, y : y + size, x : x + size]), f"{clip_path.name} keyframes {keys}"
    return moving_square_clip(
        n, size, size, size // 4, (size // 8, size // 8), (size // 32, size // 64)
    ), "synthetic moving square (clip not found)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    args = ap.parse_args()

    frames, source = batch_frames(args.clip, args.frames, args.size)
    t0 = time.perf_counter()
    flows = sequence_flows(frames)
    t_flow = time.perf_counter() - t0

    build_correspondence(frames, flows)  # warm-up (allocator, kernels)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        corr = build_correspondence(frames, flows)
        times.append(time.perf_counter() - t0)
    t_vec = statistics.median(times)

    oracle = load_oracle()
    t0 = time.perf_counter()
    naive = {
        f: oracle.naive_scale(
            frames, flows.fwd.numpy(), flows.bwd.numpy(), flows.occ_fwd.numpy(), flows.occ_bwd.numpy(), f
        )
        for f in DECODER_FACTORS
    }
    t_naive = time.perf_counter() - t0

    for f, ref in naive.items():  # the figures only count if both builds agree
        sc = corr[f]
        for key in ("occ_fwd", "occ_bwd", "unique_index", "traj_perm", "traj_inverse", "traj_segment"):
            np.testing.assert_array_equal(getattr(sc, key).numpy(), ref[key], err_msg=f"{key} @ {f}")
        np.testing.assert_allclose(sc.flow_fwd.numpy(), ref["flow_fwd"], atol=1e-5)

    n, h, w = frames.shape[:3]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores; device: cpu; "
        f"dtype: float32 flows / int64 indices; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"batch: {n} frames {w}x{h} from {source}; scales (factors) {list(DECODER_FACTORS)}")
    for f in DECODER_FACTORS:
        sc = corr[f]
        print(
            f"  factor {f:2d}: {sc.size[1]}x{sc.size[0]} tokens, unique region {sc.unique_index.numel()} / "
            f"{n * sc.num_tokens} tokens, trajectories with a broken link "
            f"{(sc.traj_segment[-1] > 0).float().mean().item():.1%}"
        )
    print(f"flow estimation (DIS medium, both directions, {n - 1} pairs): {t_flow:.3f} s (not part of the build)")
    print(f"build, vectorized (median of {args.repeats}): {t_vec * 1e3:.1f} ms")
    print(f"build, naive per-pixel loop (same run):   {t_naive:.2f} s")
    print(f"speed-up: {t_naive / t_vec:.0f}x  (target >= 50x)")
    if args.json:
        print(
            json.dumps(
                {
                    "frames": n,
                    "size": [w, h],
                    "vectorized_s": t_vec,
                    "naive_s": t_naive,
                    "speedup": t_naive / t_vec,
                    "flow_s": t_flow,
                    "threads": torch.get_num_threads(),
                }
            )
        )


if __name__ == "__main__":
    main()
