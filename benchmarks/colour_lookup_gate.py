"""What `PropagationConfig.colour_lookup="auto"` decides for the propagation benchmark's keys, and why.

    python benchmarks/colour_lookup_gate.py [--clips dog music] [--filters pencil flat] [--max-frames 31] [--every 10]
                                            [--size 512]

For every key (frames 0, every, 2*every, ... of each shared clip or clip variant, read as `benchmarks/propagation.py`
reads them) and every filter (default: the tuning filters), prints the ratio the gate compares with
`lookup_auto_ratio`: the key's mean `colour_model_error` (the local linear colour model's error) over its mean
`lookup_self_error` (how well its own colours predict its style, leave-one-out), and whether the lookup is on. CPU,
float32.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
from propagation import CLIPS, FILTERS, MOTIONS, TUNING_FILTERS, load_clip

from fresco_v2v.propagate import (
    PropagationConfig,
    colour_model_error,
    lookup_self_error,
    residual_coefficients,
)


def to_tensor(rgb) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(MOTIONS), metavar="CLIP")
    ap.add_argument("--filters", nargs="+", default=list(TUNING_FILTERS), choices=list(FILTERS))
    ap.add_argument("--max-frames", type=int, default=31)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PropagationConfig()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; threshold lookup_auto_ratio = "
        f"{cfg.lookup_auto_ratio}"
    )
    print(f"{'clip':14s} {'filter':14s} ratio per key (on if >= threshold)")
    for clip in args.clips:
        name, start, stride = MOTIONS[clip]
        frames = load_clip(name, args.size, args.max_frames, start, stride)
        keys = list(range(0, len(frames), args.every))
        for fname in args.filters:
            style = FILTERS[fname]
            cells = []
            for k in keys:
                src, sty = to_tensor(frames[k]), to_tensor(style(frames[k]))
                coeffs = residual_coefficients(src, sty, cfg.residual_radius, cfg.residual_eps, cfg.residual_max_gain)
                model, own = colour_model_error(src, sty, coeffs, cfg), lookup_self_error(src, sty, cfg)
                ratio = (model.mean() / own.mean()).item()
                cells.append(f"{k}: {ratio:5.1f} {'on ' if ratio >= cfg.lookup_auto_ratio else 'off'}")
            print(f"{clip[:14]:14s} {fname:14s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
