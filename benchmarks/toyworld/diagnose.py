"""Why the toy model does not translate faithfully: where the truth differs from the photo, and what the denoiser does.

    python benchmarks/toyworld/diagnose.py [--model toy] [--per-clip 4] [--threads 2]

On evenly spaced frames of the held-out clips it prints:
1. the photo's PSNR to the true painting, the per-pixel difference percentiles, and the PSNR a global affine colour
   fit of photo to truth reaches (how much of the gap is colour and how much is structure, e.g. ink lines), and
   the painting of the photo blurred by 1 / 2 / 4 px (what a translator that knows the structure only to that
   precision can reach; SDEdit from t = 600 keeps it to about 2-3 latent pixels = 8-12 px);
2. the VAE round trip of photo and truth (the ceiling of any translation);
3. the one-step x̂₀ from the photo latent noised to t = 200 / 400 / 600 with "a painting", guidance 1 and 5: PSNR to
   the truth and to the photo (does the model use the caption where SDEdit needs it?);
4. deterministic DDIM (eta 0) from t = 600 with guidance 1 / 3 / 5 and 12 / 30 steps (is the sampler the problem?).
Noise from a seeded generator; CPU, float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import VIDEOS, held_out_frames, to_unit  # noqa: E402

from fresco_v2v import toyworld as tw  # noqa: E402
from fresco_v2v.testing import sd15_scheduler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--videos", default=str(VIDEOS))
    ap.add_argument("--per-clip", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: cpu; dtype: float32; torch {torch.__version__}, {torch.get_num_threads()} threads")

    photos = held_out_frames(Path(args.videos), per_clip=args.per_clip)
    truth = tw.ground_truth(photos)
    diff = np.abs(truth.astype(int) - photos.astype(int))
    x = np.c_[photos.reshape(-1, 3).astype(float), np.ones(photos.size // 3)]
    fit, *_ = np.linalg.lstsq(x, truth.reshape(-1, 3).astype(float), rcond=None)
    print(f"{len(photos)} held-out frames; photo -> truth {tw.psnr(photos, truth):.2f} dB")
    print(f"|truth - photo| percentiles 50/90/99: {np.percentile(diff, [50, 90, 99]).tolist()}")
    fitted = np.clip(x @ fit, 0, 255).reshape(photos.shape)
    print(f"global affine colour fit photo -> truth: {tw.psnr(fitted, truth):.2f} dB")
    for sigma in (1.0, 2.0, 4.0):
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in photos])
        print(
            f"painting of the photo blurred by sigma {sigma:g} px (structure known to ~{sigma:g} px): "
            f"{tw.psnr(tw.ground_truth(blurred), truth):.2f} dB to the truth"
        )

    pipe = tw.load_toy_pipeline(args.model)
    unet, vae = pipe.unet, pipe.vae
    sf = vae.config.scaling_factor
    ids = pipe.tokenizer(["", tw.PAINTING], padding="max_length", max_length=77, return_tensors="pt").input_ids

    def encode(images):
        return vae.encode(to_unit(images)).latent_dist.mean * sf

    def decode(z):
        img = (vae.decode(z / sf).sample.clamp(-1, 1) + 1) * 127.5
        return img.round().permute(0, 2, 3, 1).numpy().astype(np.uint8)

    with torch.no_grad():
        emb = pipe.text_encoder(ids)[0]
        zp, zt = encode(photos), encode(truth)
        print(f"VAE round trip: truth {tw.psnr(decode(zt), truth):.2f} dB, photo {tw.psnr(decode(zp), photos):.2f} dB")
        ab = sd15_scheduler().alphas_cumprod
        b = len(photos)
        cond = torch.cat([emb[[0]].expand(b, -1, -1), emb[[1]].expand(b, -1, -1)])

        def eps(x, t, g):
            e = unet(torch.cat([x, x]), torch.full((2 * b,), int(t)), encoder_hidden_states=cond).sample
            u, c = e.chunk(2)
            return u + g * (c - u)

        noise = torch.randn(zp.shape, generator=torch.Generator().manual_seed(0))
        for t in (200, 400, 600):
            a = ab[t]
            xt = a.sqrt() * zp + (1 - a).sqrt() * noise
            for g in (1.0, 5.0):
                x0 = decode((xt - (1 - a).sqrt() * eps(xt, t, g)) / a.sqrt())
                print(
                    f"one-step x0 from t={t}, guidance {g}: to truth {tw.psnr(x0, truth):.2f} dB, "
                    f"to photo {tw.psnr(x0, photos):.2f} dB"
                )
        for g in (1.0, 3.0, 5.0):
            for steps in (12, 30):
                ts = np.linspace(600, 0, steps + 1).round().astype(int)
                x = ab[ts[0]].sqrt() * zp + (1 - ab[ts[0]]).sqrt() * noise
                for t, tp in zip(ts[:-1], ts[1:]):
                    e = eps(x, t, g)
                    a, ap_ = ab[t], (ab[tp] if tp > 0 else torch.tensor(1.0))
                    x = ap_.sqrt() * (x - (1 - a).sqrt() * e) / a.sqrt() + (1 - ap_).sqrt() * e
                out = decode(x)
                print(
                    f"DDIM eta 0 from t=600, guidance {g}, {steps} steps: to truth {tw.psnr(out, truth):.2f} dB, "
                    f"to photo {tw.psnr(out, photos):.2f} dB"
                )


if __name__ == "__main__":
    main()
