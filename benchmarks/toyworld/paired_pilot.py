"""Pilot: does supervising SDEdit's job directly make the toy model translate? Fine-tunes a toy checkpoint.

    python benchmarks/toyworld/paired_pilot.py [--model toy] [--steps 400] [--lr 5e-4] [--pair 0.5] [--gamma 5]

The UNet stage of ``train.py`` only ever denoises a painting towards that painting; SDEdit asks it to denoise a
*photo* towards the painting. Here the committed UNet and text encoder are fine-tuned with a fraction ``--pair`` of
the styled samples ("a painting", "a pencil drawing") replaced by *translation pairs*: the latent of the same
image's photo is noised, and the target is the noise that would make the styled latent the denoised answer,
eps' = (x_t - sqrt(a_t) z_styled) / sqrt(1 - a_t) = eps + sqrt(a_t / (1 - a_t)) (z_photo - z_styled).
That target grows with the signal-to-noise ratio, so the pairs' loss is weighted by min(SNR, gamma) / SNR
(Min-SNR weighting, Hang et al., ICCV 2023; gamma 0 turns it off). Everything else as in ``train.py`` (16x16
latent crops, batch 16, caption dropout, timestep mix, cosine lr).

It prints per-frame SDEdit (strength 0.6, "a painting", guidance 1 / 3 / 5) on held-out frames before and after,
and after fine-tuning the one-step x0 from the photo latent noised to t = 0 ... 600 (guidance 1): PSNR to the true
painting and to the photo. Nothing is saved: an experiment for the training recipe (seeded, CPU, float32).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import (  # noqa: E402
    encode_all,
    latent_crops,
    load_training_images,
    lr_at,
    pilot_arguments,
    pilot_setup,
    sample_noisy_batch,
    to_unit,
)

from fresco_v2v import toyworld as tw  # noqa: E402
from fresco_v2v.testing import sd15_scheduler  # noqa: E402


def main() -> None:
    ap = pilot_arguments(__doc__, lr=5e-4)
    ap.add_argument("--pair", type=float, default=0.5)
    ap.add_argument("--gamma", type=float, default=5.0)
    args = ap.parse_args()
    videos, pipe, photos, truth = pilot_setup(args)
    print(f"{len(photos)} held-out frames: photo to truth {tw.psnr(photos, truth):.2f} dB")
    for g in (1.0, 3.0, 5.0):
        before = tw.psnr(tw.translate_per_frame(pipe, photos, guidance_scale=g), truth)
        print(f"  before: SDEdit guidance {g}: {before:.2f} dB")

    t0 = time.perf_counter()
    images, labels = load_training_images(videos, seed=0)
    n_photos = len(images) // 3  # images are [photos; paintings; pencil drawings] of the same photos
    latents = encode_all(pipe.vae, images) * pipe.vae.config.scaling_factor
    print(f"data and latents: {time.perf_counter() - t0:.0f} s")

    unet, text_encoder = pipe.unet, pipe.text_encoder
    ids = pipe.tokenizer(
        ["", tw.PHOTO, tw.PAINTING, tw.PENCIL], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    alphas = sd15_scheduler().alphas_cumprod
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    labels_t = torch.from_numpy(labels)
    batch, crop = 16, 16
    unet.train()
    text_encoder.train()
    t0, acc = time.perf_counter(), []
    for step in range(args.steps):
        nb = sample_noisy_batch(latents, labels_t, alphas, gen, batch, crop)
        pair = (labels_t[nb.index] >= 2) & (torch.rand(batch, generator=gen) < args.pair)  # [B] styled samples
        a = alphas[nb.t].view(-1, 1, 1, 1)
        z_photo = latent_crops(latents, nb.index % n_photos, nb.ys, nb.xs, crop)
        z_styled = latent_crops(latents, nb.index, nb.ys, nb.xs, crop)
        xt_pair = a.sqrt() * z_photo + (1 - a).sqrt() * nb.eps
        eps_pair = (xt_pair - a.sqrt() * z_styled) / (1 - a).sqrt()
        m = pair.view(-1, 1, 1, 1)
        xt, target = torch.where(m, xt_pair, nb.xt), torch.where(m, eps_pair, nb.eps)
        snr = alphas[nb.t] / (1 - alphas[nb.t])
        weight = torch.ones_like(snr)
        if args.gamma > 0:
            weight = torch.where(pair, snr.clamp(max=args.gamma) / snr, weight)
        pred = unet(xt, nb.t, encoder_hidden_states=text_encoder(ids)[0][nb.captions]).sample
        loss = ((pred - target).square().mean((1, 2, 3)) * weight).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            print(f"  step {step + 1:4d}/{args.steps}  loss {np.mean(acc):.4f}  {time.perf_counter() - t0:.0f} s")
            acc = []
    unet.eval()
    text_encoder.eval()
    for g in (1.0, 3.0, 5.0):
        after = tw.psnr(tw.translate_per_frame(pipe, photos, guidance_scale=g), truth)
        print(f"  after: SDEdit guidance {g}: {after:.2f} dB (photo {tw.psnr(photos, truth):.2f} dB)")

    vae, sf = pipe.vae, pipe.vae.config.scaling_factor
    with torch.no_grad():
        emb = text_encoder(ids)[0][2:3].expand(len(photos), -1, -1)  # "a painting", guidance 1
        z = vae.encode(to_unit(photos)).latent_dist.mean * sf
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        for t in (0, 100, 200, 400, 600):
            a = alphas[t]
            xt = a.sqrt() * z + (1 - a).sqrt() * noise
            x0 = (xt - (1 - a).sqrt() * unet(xt, torch.full((len(z),), t), encoder_hidden_states=emb).sample) / a.sqrt()
            img = ((vae.decode(x0 / sf).sample.clamp(-1, 1) + 1) * 127.5).round()
            img = img.permute(0, 2, 3, 1).numpy().astype(np.uint8)
            print(
                f"  after: one-step x0 from t={t} (alpha_bar {a:.3f}): to truth {tw.psnr(img, truth):.2f} dB, "
                f"to photo {tw.psnr(img, photos):.2f} dB"
            )


if __name__ == "__main__":
    main()
