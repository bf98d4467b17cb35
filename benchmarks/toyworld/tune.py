"""Choose the toy world's SDEdit settings on validation frames, never on the held-out clips that report them.

    python benchmarks/toyworld/tune.py [--model toy] [--per-clip 4] [--strengths 0.4 0.5 0.6]
                                       [--guidance 1 2 3 5] [--threads 2]

Validation frames: evenly spaced frames of the last 20% of the training clips (dog, music), which training never
saw; the held-out clips (boxer, car-turn) stay for ``benchmarks/toyworld_eval.py``. For each strength and guidance
scale it prints per-frame SDEdit ("a photo" -> "a painting", the toy world's steps, one seed per frame) scored by
PSNR to the true painting, next to the photo's PSNR to it. Also a shape-scene clip's frames (the demo's kind of
scene, another seed than the demo's). CPU, float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import VIDEOS  # noqa: E402

from fresco_v2v import toyworld as tw  # noqa: E402
from fresco_v2v.synthetic import shape_scene_clip  # noqa: E402
from fresco_v2v.video import read_video  # noqa: E402


def validation_frames(videos: Path, per_clip: int) -> np.ndarray:
    """Evenly spaced frames of the last (1 - TRAIN_FRACTION) of each training clip."""
    out = []
    for name in tw.TRAIN_CLIPS:
        frames = read_video(videos / f"{name}.mp4", short_side=tw.TOY_SIZE).frames
        start = int(len(frames) * tw.TRAIN_FRACTION)
        out.append(frames[np.linspace(start, len(frames) - 1, per_clip).round().astype(int)])
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--videos", default=str(VIDEOS))
    ap.add_argument("--per-clip", type=int, default=4)
    ap.add_argument("--strengths", type=float, nargs="*", default=[0.4, 0.5, 0.6])
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0, 3.0, 5.0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device: cpu; dtype: float32; torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}"
    )
    pipe = tw.load_toy_pipeline(args.model)
    sets = {
        "validation (dog, music: last 20%)": validation_frames(Path(args.videos), args.per_clip),
        "shape scene (seed 99)": shape_scene_clip(16, tw.TOY_SIZE, tw.TOY_SIZE + 64, 99)[:: 16 // args.per_clip],
    }
    for label, photos in sets.items():
        truth = tw.ground_truth(photos)
        print(f"{label}: {len(photos)} frames, photo to truth {tw.psnr(photos, truth):.2f} dB")
        print("  strength " + "".join(f"   guidance {g:<4g}" for g in args.guidance))
        for s in args.strengths:
            row = [
                tw.psnr(tw.translate_per_frame(pipe, photos, strength=s, guidance_scale=g), truth)
                for g in args.guidance
            ]
            print(f"  {s:8.2f} " + "".join(f"{p:14.2f} dB" for p in row), flush=True)


if __name__ == "__main__":
    main()
