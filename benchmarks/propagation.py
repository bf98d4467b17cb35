"""Propagation with a known answer: stylize keyframes with a deterministic filter, propagate, compare with the truth.

    python benchmarks/propagation.py [--clips dog car-turn] [--filters stylization] [--max-frames 101]
                                     [--every 10] [--size 512] [--device cpu] [--json]

For each shared clip (../shared/data/videos, read at short side 512 and centre-cropped to 512x512) the frames
0, every, 2*every, ... are keys. Each filter is applied to the keys (the "translation") and, as ground truth, to
every frame. Methods: nearest-key copy, flow warp from the nearest key, two-key flow blend by temporal distance
(OpenCV DIS medium, the foundation's default flow, bilinear warps), and ours (``fresco_v2v.propagate``).
Metrics over the propagated (non-key) frames: PSNR, SSIM (Gaussian window 11/1.5, per RGB channel, Wang et al.
2004), sharpness = gradient energy of output / ground truth; flicker over every consecutive pair of the whole
output: mean |out_{t+1} - out_t warped by the source flow| on pixels visible in both (0-255), next to the same for
the ground truth (flicker_gt). s_per_frame = (flow estimation + synthesis) / propagated frames.
Issue targets: ours > two-key blend on PSNR and SSIM everywhere, sharpness >= 0.95, flicker <= flicker_gt,
< 1 s per frame on CPU at 512x512.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fresco_v2v.flow import get_flow_estimator, sequence_flows, warp
from fresco_v2v.propagate import PropagationConfig, estimate_propagation_flows, key_segments, propagate
from fresco_v2v.video import read_video

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CLIPS = ("dog", "car-turn", "boxer-punching-towards-camera", "music")
METHODS = ("nearest_copy", "warp_nearest", "two_key_blend", "ours")


# ------------------------------------------------------------------------------------------------ filters


def _lut() -> np.ndarray:
    """A fixed colour grade: warm highlights, teal shadows, raised blacks ([256, 1, 3] uint8, BGR order)."""
    x = np.arange(256) / 255.0
    b = 0.12 + 0.80 * (1 - (1 - x) ** 1.6)
    g = 0.05 + 0.90 * (x**1.1)
    r = 1 / (1 + np.exp(-8 * (x - 0.45)))
    r = (r - r.min()) / (r.max() - r.min())
    return (np.stack([b, g, r], -1)[:, None, :] * 255).round().clip(0, 255).astype(np.uint8)


LUT = _lut()


def f_stylization(rgb: np.ndarray) -> np.ndarray:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45), cv2.COLOR_BGR2RGB)


def f_edge_lut(rgb: np.ndarray) -> np.ndarray:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    smooth = cv2.edgePreservingFilter(bgr, flags=cv2.RECURS_FILTER, sigma_s=40, sigma_r=0.3)
    return cv2.cvtColor(cv2.LUT(smooth, LUT), cv2.COLOR_BGR2RGB)


def f_posterize_hue(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + 30) % 180  # +60 degrees
    hsv[..., 1] = np.minimum(hsv[..., 1].astype(np.int16) * 3 // 2, 255)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return ((out // 51) * 51 + 25).astype(np.uint8)  # 5 levels per channel


FILTERS = {"stylization": f_stylization, "edge_lut": f_edge_lut, "posterize_hue": f_posterize_hue}


# ------------------------------------------------------------------------------------------------ metrics


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004): Gaussian window sigma 1.5 (11x11), K1 0.01, K2 0.03, per channel."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def gradient_energy(img: np.ndarray) -> float:
    g = img.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


def flicker(frames: list[np.ndarray], bwd: torch.Tensor, occ_bwd: torch.Tensor) -> float:
    """Mean over consecutive pairs of mean |f_{t+1} - warp(f_t, flow t+1 -> t)| on pixels visible in both."""
    vals = []
    for t in range(len(frames) - 1):
        prev = torch.from_numpy(frames[t]).permute(2, 0, 1)[None].float()
        aligned = warp(prev, bwd[t][None])[0].permute(1, 2, 0).numpy()
        diff = np.abs(frames[t + 1].astype(np.float32) - aligned).mean(-1)
        vis = ~occ_bwd[t].numpy()
        vals.append(float(diff[vis].mean()) if vis.any() else 0.0)
    return float(np.mean(vals))


# ------------------------------------------------------------------------------------------------ baselines


def nearest_key(t: int, keys: list[int]) -> int:
    return min(keys, key=lambda k: (abs(k - t), k))


def baseline_flows(frames: np.ndarray, keys: list[int]) -> dict[int, dict[int, torch.Tensor]]:
    """Direct DIS flow from every non-key frame to each of its neighbouring keys: {t: {key: [H, W, 2]}}."""
    est = get_flow_estimator("dis")
    out: dict[int, dict[int, torch.Tensor]] = {}
    for left, right, between in key_segments(len(frames), keys):
        for t in between:
            out[t] = {k: torch.from_numpy(est(frames[t], frames[k])) for k in (left, right) if k is not None}
    return out


def _warp_np(img: np.ndarray, flow: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return warp(x, flow[None])[0].permute(1, 2, 0).numpy()


def run_baseline(method, frames, keys, styl, flows) -> list[np.ndarray]:
    out = [None] * len(frames)
    for k in keys:
        out[k] = styl[k]
    for left, right, between in key_segments(len(frames), keys):
        for t in between:
            if method == "nearest_copy":
                out[t] = styl[nearest_key(t, [k for k in (left, right) if k is not None])]
            elif method == "warp_nearest":
                k = nearest_key(t, [k for k in (left, right) if k is not None])
                out[t] = np.clip(_warp_np(styl[k], flows[t][k]).round(), 0, 255).astype(np.uint8)
            else:
                acc, wsum = 0.0, 0.0
                for k in (left, right):
                    if k is None:
                        continue
                    other = right if k == left else left
                    wk = 1.0 if other is None else abs(other - t) / abs(right - left)
                    acc = acc + wk * _warp_np(styl[k], flows[t][k])
                    wsum += wk
                out[t] = np.clip((acc / wsum).round(), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------------ driver


def load_clip(name: str, size: int, max_frames: int | None) -> np.ndarray:
    clip = read_video(VIDEOS / f"{name}.mp4", short_side=size, max_frames=max_frames)
    f = clip.frames
    h, w = f.shape[1:3]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(f[:, y : y + size, x : x + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), help=f"any of {CLIPS}")
    ap.add_argument("--filters", nargs="+", default=list(FILTERS), choices=list(FILTERS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--max-frames", type=int, default=101, help="first N frames of each clip (0 = all)")
    ap.add_argument("--every", type=int, default=10, help="keyframe interval")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="PropagationConfig overrides")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()

    overrides = {}
    for item in args.set:
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v) if v[:1] in "0123456789-tf[" else v
    cfg = PropagationConfig(**overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores; device: {dev}; "
        f"dtype: float32; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"opencv {cv2.__version__}, {cv2.getNumThreads()} threads"
    )
    print(f"keys every {args.every} frames, {args.size}x{args.size}, flow DIS medium; config overrides {overrides}")
    results: dict = {}
    header = f"{'clip':<14} {'filter':<14} {'method':<14} {'PSNR':>6} {'SSIM':>6} {'flicker':>7} {'fl_gt':>6} "
    header += f"{'sharp':>6} {'s/frame':>8}"
    print(header)
    for clip in args.clips:
        frames = load_clip(clip, args.size, args.max_frames or None)
        n = len(frames)
        keys = list(range(0, n, args.every))
        nonkey = [t for t in range(n) if t not in keys]
        seq = sequence_flows(frames)  # for the flicker metric only
        t0 = time.perf_counter()
        bflows = baseline_flows(frames, keys) if {"warp_nearest", "two_key_blend"} & set(args.methods) else {}
        t_bflow = time.perf_counter() - t0
        t0 = time.perf_counter()
        oflows = estimate_propagation_flows(frames, keys, cfg) if "ours" in args.methods else {}
        t_oflow = time.perf_counter() - t0
        results[clip] = {}
        for fname in args.filters:
            filt = FILTERS[fname]
            gt = [filt(f) for f in frames]
            styl = {k: gt[k] for k in keys}
            fl_gt = flicker(gt, seq.bwd, seq.occ_bwd)
            ge_gt = sum(gradient_energy(gt[t]) for t in nonkey)
            results[clip][fname] = {}
            for m in args.methods:
                t0 = time.perf_counter()
                if m == "ours":
                    out = propagate(frames, keys, [styl[k] for k in keys], cfg, device=dev, flows=oflows)
                    t_flow = t_oflow
                else:
                    out = run_baseline(m, frames, keys, styl, bflows)
                    t_flow = t_bflow if m != "nearest_copy" else 0.0
                t_syn = time.perf_counter() - t0
                r = {
                    "psnr": float(np.mean([psnr(out[t], gt[t]) for t in nonkey])),
                    "ssim": float(np.mean([ssim(out[t], gt[t]) for t in nonkey])),
                    "flicker": flicker(out, seq.bwd, seq.occ_bwd),
                    "flicker_gt": fl_gt,
                    "sharpness": sum(gradient_energy(out[t]) for t in nonkey) / ge_gt,
                    "s_per_frame": (t_flow + t_syn) / max(len(nonkey), 1),
                }
                results[clip][fname][m] = r
                print(
                    f"{clip[:14]:<14} {fname:<14} {m:<14} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['flicker']:7.2f} "
                    f"{r['flicker_gt']:6.2f} {r['sharpness']:6.3f} {r['s_per_frame']:8.3f}",
                    flush=True,
                )
    if "ours" in args.methods and "two_key_blend" in args.methods:
        checks = []
        for clip, per in results.items():
            for fname, res in per.items():
                o, b = res["ours"], res["two_key_blend"]
                checks.append(
                    (
                        f"{clip}/{fname}",
                        o["psnr"] > b["psnr"] and o["ssim"] > b["ssim"],
                        o["sharpness"] >= 0.95,
                        o["flicker"] <= o["flicker_gt"],
                        o["s_per_frame"] < 1.0,
                    )
                )
        names = ("beats two-key blend (PSNR & SSIM)", "sharpness >= 0.95", "flicker <= ground truth", "< 1 s/frame")
        for i, nm in enumerate(names):
            bad = [c[0] for c in checks if not c[i + 1]]
            print(f"target {nm}: {'holds everywhere' if not bad else 'FAILS on ' + ', '.join(bad)}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
