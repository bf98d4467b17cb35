"""Pilot: does a ControlNet on canny edges help the toy model translate? Trains one on top of a toy checkpoint.

    python benchmarks/toyworld/controlnet_pilot.py [--model toy] [--steps 400] [--lr 1e-3] [--threads 2]

The toy checkpoint's ControlNet is untrained (zero output convolutions). Here one is made from the UNet
(``ControlNetModel.from_unet``, condition encoder for latent factor 4) and trained with the UNet and text encoder
frozen, on the training data of ``train.py``: 16x16 latent crops with the matching 64x64 crop of the *source photo's*
canny edges (``fresco_v2v.control.canny_condition``, as the pipeline computes them), epsilon loss, the same timestep
and caption-dropout sampling as the UNet stage. It prints per-frame SDEdit (strength 0.6, "a painting") on held-out
frames with the untrained and the trained ControlNet, PSNR to the true painting next to the photo's. Nothing is
saved: this is an experiment for the next training recipe, not part of the checkpoint (seeded, CPU, float32).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import encode_all, load_training_images, lr_at, pilot_arguments, pilot_setup, sample_noisy_batch  # noqa: E402

from fresco_v2v import toyworld as tw  # noqa: E402
from fresco_v2v.control import canny_condition  # noqa: E402
from fresco_v2v.testing import sd15_scheduler  # noqa: E402


def main() -> None:
    args = pilot_arguments(__doc__, lr=1e-3).parse_args()
    videos, pipe, photos, truth = pilot_setup(args)
    before = tw.psnr(tw.translate_per_frame(pipe, photos), truth)
    print(f"{len(photos)} held-out frames: photo {tw.psnr(photos, truth):.2f} dB; untrained ControlNet {before:.2f} dB")

    t0 = time.perf_counter()
    images, labels = load_training_images(videos, seed=0)
    n_photos = len(images) // 3  # images are [photos; paintings; pencil drawings] of the same photos
    edges = canny_condition(images[:n_photos])[:, :1]  # [P, 1, 128, 128], the source photo's edges
    latents = encode_all(pipe.vae, images) * pipe.vae.config.scaling_factor
    print(f"data and latents: {time.perf_counter() - t0:.0f} s")

    controlnet = pipe.controlnet
    unet, text_encoder = pipe.unet, pipe.text_encoder
    for p in [*unet.parameters(), *text_encoder.parameters()]:
        p.requires_grad_(False)
    ids = pipe.tokenizer(
        ["", tw.PHOTO, tw.PAINTING, tw.PENCIL], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        emb = text_encoder(ids)[0]
    alphas = sd15_scheduler().alphas_cumprod
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    labels_t = torch.from_numpy(labels)
    batch, crop, factor = 16, 16, 4
    controlnet.train()
    t0, acc = time.perf_counter(), []
    for step in range(args.steps):
        nb = sample_noisy_batch(latents, labels_t, alphas, gen, batch, crop)
        xt, t, cap, eps = nb.xt, nb.t, nb.captions, nb.eps
        prow = (nb.ys[:, None] * factor + torch.arange(crop * factor))[:, :, None]
        pcol = (nb.xs[:, None] * factor + torch.arange(crop * factor))[:, None, :]
        cond = edges[(nb.index % n_photos)[:, None, None], :, prow, pcol].permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
        down, mid = controlnet(xt, t, encoder_hidden_states=emb[cap], controlnet_cond=cond, return_dict=False)
        residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        pred = unet(xt, t, encoder_hidden_states=emb[cap], **residuals).sample
        loss = F.mse_loss(pred, eps)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        acc.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            took = time.perf_counter() - t0
            print(f"  controlnet step {step + 1:4d}/{args.steps}  loss {np.mean(acc):.4f}  {took:.0f} s")
            acc = []
    controlnet.eval()
    after = tw.psnr(tw.translate_per_frame(pipe, photos), truth)
    print(
        f"per-frame SDEdit PSNR to the true painting: untrained ControlNet {before:.2f} dB, trained {after:.2f} dB, "
        f"photo {tw.psnr(photos, truth):.2f} dB"
    )


if __name__ == "__main__":
    main()
