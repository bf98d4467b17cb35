"""How well a toy checkpoint's VAE carries colour (issue 24): round trips (encode, decode the posterior mean) of
flat colour patches, and of the demo's scene and its true painting (train.py logs the training images' round trip).

    python benchmarks/toyworld/vae_probe.py [--model toy | toy:PATH] [--threads 2]

The demo's output passes through this decoder, so its PSNR to the true painting cannot beat the painting's round
trip by much: the first thing to check before training a new checkpoint's diffusion stages.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from fresco_v2v import toyworld as tw
from fresco_v2v.synthetic import demo_clip

#: Flat colours: the demo's teal background, primaries, a yellow, a grey, a cyan, a mauve (RGB).
COLOURS = [(32, 84, 104), (200, 40, 40), (40, 200, 40), (40, 40, 200), (230, 230, 60), (128, 128, 128), (60, 220, 230),
           (150, 60, 90)]  # fmt: skip


def flat_patches(size: int = 64) -> np.ndarray:
    """[len(COLOURS), size, size, 3] uint8: one flat patch of each probe colour."""
    return np.broadcast_to(np.array(COLOURS, np.uint8)[:, None, None], (len(COLOURS), size, size, 3)).copy()


def round_trip(vae, frames: np.ndarray) -> np.ndarray:
    """[B, H, W, 3] uint8 -> the same frames encoded (posterior mean) and decoded, as uint8."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
    return ((y.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)


def latent_colour_probe(vae, count: int = 400, size: int = 32, seed: int = 0) -> tuple[float, float, float]:
    """Does the encoder keep a flat colour? RGB of ``count`` random flat patches predicted from their latents by
    least squares on (z, z^2, 1): the first 3/4 fit, the rest scored. Probed at the latent's centre 2x2 (away from
    the zero padding at the borders) and on the whole latent.

    Returns (rms error from the centre, rms error from the whole latent, std of the RGB values), in 8-bit levels:
    an error near the std means the latent has lost the colour.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (count, 3))
    x = np.broadcast_to(colours[:, None, None].astype(np.uint8), (count, size, size, 3))
    x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean  # [N, 4, size / 4, size / 4]
    c = z.shape[-1] // 2
    out = []
    for feat in (z[:, :, c - 1 : c + 1, c - 1 : c + 1].mean((2, 3)), z.flatten(1)):
        f = feat.double().numpy()
        f = np.concatenate([f, f**2, np.ones((count, 1))], 1)
        fit = count * 3 // 4
        w, *_ = np.linalg.lstsq(f[:fit], colours[:fit].astype(np.float64), rcond=None)
        out.append(float(np.sqrt(((f[fit:] @ w - colours[fit:]) ** 2).mean())))
    return out[0], out[1], float(colours.std())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vae = tw.load_toy_pipeline(args.model).vae.float()
    print(f"# {platform.machine()} CPU, torch {torch.__version__}, {args.threads} threads, float32; {args.model}")
    flat = flat_patches()
    out = round_trip(vae, flat)
    print("flat 64x64 patch RGB -> mean RGB after the round trip")
    for c, o in zip(COLOURS, out):
        print(f"  {c} -> {tuple(int(v) for v in o.reshape(-1, 3).mean(0).round())}")
    print(f"flat patches: {tw.psnr(flat, out):.2f} dB")
    centre, whole, std = latent_colour_probe(vae)
    print(
        f"encoder: RGB of flat patches from their latent (quadratic least squares, held-out quarter): rms error "
        f"{centre:.1f} levels from the centre, {whole:.1f} from the whole latent (RGB std {std:.1f})"
    )
    clip = demo_clip(4)
    truth = tw.ground_truth(clip)
    print(
        f"demo scene: input {tw.psnr(clip, round_trip(vae, clip)):.2f} dB, true painting "
        f"{tw.psnr(truth, round_trip(vae, truth)):.2f} dB (input to true painting: {tw.psnr(clip, truth):.2f} dB)"
    )


if __name__ == "__main__":
    main()
