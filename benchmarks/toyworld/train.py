"""Train the toy world's latent diffusion stack on a CPU, from a fixed seed, and write one .safetensors checkpoint.

    python benchmarks/toyworld/train.py [--out src/fresco_v2v/data/toyworld.safetensors] [--threads 2]
                                        [--vae-steps N] [--unet-steps N] [--seed 0]

Data (see ``fresco_v2v.toyworld``): the first 80% of the frames of dog.mp4 and music.mp4 (../shared/data/videos) at
128x128, each frame as is plus two recoloured, randomly mirrored variants (channel order, hue, saturation,
brightness), each as "a photo" (the image), "a painting" (cv2.stylization) and "a pencil drawing"
(cv2.pencilSketch). boxer-punching-towards-camera.mp4 and car-turn.mp4 are never seen.

Stages, each from the same seed:
1. VAE (AutoencoderKL, latent factor 4): L1 reconstruction + a small KL term on random 64x64 crops.
2. Latents of every training image (posterior mean x SD's convention of a scaling factor = 1 / latent std).
3. UNet (SD1.5 block types, epsilon prediction, SD1.5's DDPM schedule) on random 16x16 crops of the 32x32
   latents (a fully convolutional net: 4x cheaper than whole latents; it runs on whole 32x32 latents later),
   batches of 16, 3/4 of the timesteps drawn below t = 700 (SDEdit at strength <= 0.7 never goes higher),
   captions dropped 10% of the time for classifier-free guidance. The small CLIP text encoder is trained with it
   (SD freezes a pretrained CLIP; a random one barely tells the four captions apart).
4. Check: per-frame SDEdit (strength 0.6, "a painting") of held-out frames, PSNR to the true painting vs the
   photo's PSNR to it. The same figures come from ``benchmarks/toyworld_eval.py``.

The training log (losses every 50 steps, seconds per stage) is printed and stored in the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fresco_v2v import toyworld as tw
from fresco_v2v.testing import sd15_scheduler
from fresco_v2v.video import read_video

VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"


def log(msg: str) -> None:
    print(msg, flush=True)


def augment_photo(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A recoloured variant of a frame: channel permutation, hue rotation, saturation and brightness, mirror.

    Two training scenes have two palettes; without this the model learns their colours and paints every held-out
    scene beige (measured: PSNR to the painting fell from 13.5 to 10.8 dB). The truth of a variant is the filter
    applied to the variant, so the pairs stay exact.
    """
    img = frame[:, :, rng.permutation(3)]
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
    hsv[..., 2] = np.clip(255 * (hsv[..., 2] / 255) ** rng.uniform(0.7, 1.4), 0, 255)
    img = cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB)
    return np.ascontiguousarray(img[:, ::-1] if rng.random() < 0.5 else img)


def load_training_images(videos: Path, seed: int, variants: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """images [M, 128, 128, 3] uint8 and caption ids [M] (1 photo, 2 painting, 3 pencil).

    Each training frame as is plus ``variants - 1`` recoloured variants (:func:`augment_photo`), each in the
    three captions.
    """
    rng = np.random.default_rng(seed)
    photos = []
    for name in tw.TRAIN_CLIPS:
        path = videos / f"{name}.mp4"
        if not path.is_file():
            sys.exit(f"train.py: {path} not found; the toy world trains on the shared clips ({tw.TRAIN_CLIPS})")
        frames = read_video(path, short_side=tw.TOY_SIZE).frames
        for f in frames[: int(len(frames) * tw.TRAIN_FRACTION)]:
            photos.append(f)
            photos.extend(augment_photo(f, rng) for _ in range(variants - 1))
    photos = np.stack(photos)
    images, labels = [], []
    for label, caption in ((1, tw.PHOTO), (2, tw.PAINTING), (3, tw.PENCIL)):
        images.append(tw.ground_truth(photos, caption))
        labels.append(np.full(len(photos), label))
    return np.concatenate(images), np.concatenate(labels)


def pilot_arguments(doc: str | None, lr: float) -> argparse.ArgumentParser:
    """The options the fine-tuning pilots (controlnet_pilot.py, paired_pilot.py) share; each adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--videos", default=str(VIDEOS))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--per-clip", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def pilot_setup(args: argparse.Namespace):
    """A pilot's start: threads, the header line, torch's global seed (a new ControlNet's condition encoder is
    initialised from it), the model, and the held-out photos with their true paintings.

    Returns (videos folder, pipeline, photos [N, H, W, 3] uint8, truth [N, H, W, 3] uint8).
    """
    torch.set_num_threads(args.threads)
    print(f"device: cpu; dtype: float32; torch {torch.__version__}, {torch.get_num_threads()} threads; seed 0")
    videos = Path(args.videos)
    torch.manual_seed(0)
    pipe = tw.load_toy_pipeline(args.model)
    photos = held_out_frames(videos, per_clip=args.per_clip)
    return videos, pipe, photos, tw.ground_truth(photos)


def held_out_frames(videos: Path, per_clip: int = 8) -> np.ndarray:
    """Evenly spaced frames of the held-out clips, for the final check."""
    out = []
    for name in tw.HELD_OUT_CLIPS:
        path = videos / f"{name}.mp4"
        if path.is_file():
            frames = read_video(path, short_side=tw.TOY_SIZE).frames
            out.append(frames[np.linspace(0, len(frames) - 1, per_clip).round().astype(int)])
    return np.concatenate(out)


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(vae, images: np.ndarray, steps: int, gen: torch.Generator, batch: int = 16, crop: int = 64):
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    vae.train()
    curve, acc = [], []
    n, size = len(images), images.shape[1]
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen).numpy()
        ys, xs = torch.randint(0, size - crop + 1, (2, batch), generator=gen).numpy()
        x = to_unit(np.stack([images[i, y : y + crop, xx : xx + crop] for i, y, xx in zip(idx, ys, xs)]))
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.l1_loss(rec, x) + 1e-6 * posterior.kl().mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        acc.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            curve.append([step + 1, float(np.mean(acc))])
            log(f"  vae step {step + 1:5d}/{steps}  loss {np.mean(acc):.4f}")
            acc = []
    vae.eval()
    return curve


@torch.no_grad()
def encode_all(vae, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    chunks = [vae.encode(to_unit(images[i : i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(chunks)


@dataclass
class NoisyBatch:
    """One training batch of the diffusion stages: where the crops came from, and the noised latents."""

    index: torch.Tensor  # [B] training image index
    ys: torch.Tensor  # [B] crop origin, latent rows
    xs: torch.Tensor  # [B] crop origin, latent columns
    captions: torch.Tensor  # [B] caption id, 0 (empty caption) 10% of the time
    t: torch.Tensor  # [B] timesteps
    eps: torch.Tensor  # [B, 4, crop, crop] the noise
    xt: torch.Tensor  # [B, 4, crop, crop] the noised latent crops


def sample_noisy_batch(latents, labels: torch.Tensor, alphas, gen: torch.Generator, batch: int, crop: int):
    """Random latent crops, captions and timesteps, noised as in DDPM training.

    The draws from ``gen`` happen in one fixed order; the checkpoint's bit-for-bit reproduction depends on it.
    """
    n, size = len(latents), latents.shape[-1]
    idx = torch.randint(0, n, (batch,), generator=gen)
    ys, xs = torch.randint(0, size - crop + 1, (2, batch), generator=gen)
    rows = (ys[:, None] + torch.arange(crop))[:, :, None]  # [B, crop, 1]
    cols = (xs[:, None] + torch.arange(crop))[:, None, :]  # [B, 1, crop]
    x0 = latents[idx[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # [B, 4, crop, crop]
    cap = labels[idx].clone()
    cap[torch.rand(batch, generator=gen) < 0.1] = 0  # unconditional 10% of the time (classifier-free guidance)
    # 3/4 of the samples from t < 700, where SDEdit at the toy world's strengths (<= 0.7) spends all its steps
    low = torch.rand(batch, generator=gen) < 0.75
    t = (torch.rand(batch, generator=gen) * torch.where(low, 700, len(alphas))).long()
    eps = torch.randn(x0.shape, generator=gen)
    a = alphas[t].view(-1, 1, 1, 1)
    return NoisyBatch(idx, ys, xs, cap, t, eps, a.sqrt() * x0 + (1 - a).sqrt() * eps)


def train_unet(
    unet, text_encoder, latents, labels, caption_ids, steps: int, gen: torch.Generator, batch: int = 16, crop: int = 16
):
    """UNet and CLIP text encoder together (the random text encoder alone barely tells the captions apart)."""
    scheduler = sd15_scheduler()
    alphas = scheduler.alphas_cumprod
    opt = torch.optim.AdamW([*unet.parameters(), *text_encoder.parameters()], lr=1e-3, weight_decay=0.01)
    unet.train()
    text_encoder.train()
    curve, acc = [], []
    labels_t = torch.from_numpy(labels)
    for step in range(steps):
        nb = sample_noisy_batch(latents, labels_t, alphas, gen, batch, crop)
        xt, t, cap, eps = nb.xt, nb.t, nb.captions, nb.eps
        text_emb = text_encoder(caption_ids)[0]  # [4, 77, C]: the four captions
        pred = unet(xt, t, encoder_hidden_states=text_emb[cap]).sample
        loss = F.mse_loss(pred, eps)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_encoder.parameters()], 1.0)
        opt.step()
        acc.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            curve.append([step + 1, float(np.mean(acc))])
            log(f"  unet step {step + 1:5d}/{steps}  loss {np.mean(acc):.4f}")
            acc = []
    unet.eval()
    text_encoder.eval()
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(tw.BUNDLED_CHECKPOINT))
    ap.add_argument("--videos", default=str(VIDEOS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=400)
    ap.add_argument("--unet-steps", type=int, default=2600)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    videos = Path(args.videos)
    seconds: dict[str, float] = {}
    log(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; seed {args.seed}"
    )
    t0 = time.perf_counter()
    images, labels = load_training_images(videos, args.seed)
    seconds["data"] = time.perf_counter() - t0
    log(f"data: {len(images)} training images (frames + recoloured variants, x 3 captions) in {seconds['data']:.1f} s")

    unet, vae, text_encoder, tokenizer = tw.build_toy_models(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in (("unet", unet), ("vae", vae))}
    log(f"parameters: unet {params['unet'] / 1e6:.2f} M, vae {params['vae'] / 1e6:.2f} M")

    t0 = time.perf_counter()
    vae_curve = train_vae(vae, images, args.vae_steps, gen)
    seconds["vae"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw = encode_all(vae, images)
    scaling = float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = raw * scaling
    with torch.no_grad():
        sample = to_unit(images[:: max(1, len(images) // 64)])
        rec = vae.decode(vae.encode(sample).latent_dist.mean).sample
        vae_psnr = tw.psnr(((sample + 1) * 127.5).round(), ((rec.clamp(-1, 1) + 1) * 127.5).round())
    seconds["latents"] = time.perf_counter() - t0
    log(f"latents {tuple(latents.shape)}, scaling factor {scaling:.4f}, VAE reconstruction PSNR {vae_psnr:.2f} dB")

    captions = ["", tw.PHOTO, tw.PAINTING, tw.PENCIL]
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    t0 = time.perf_counter()
    unet_curve = train_unet(unet, text_encoder, latents, labels, ids, args.unet_steps, gen)
    seconds["unet"] = time.perf_counter() - t0
    seconds["train_total"] = sum(seconds.values())
    log(f"training took {seconds['train_total'] / 60:.1f} min ({ {k: round(v, 1) for k, v in seconds.items()} })")

    t0 = time.perf_counter()
    pipe = tw.assemble_pipeline(unet, vae, text_encoder, tokenizer)
    photos = held_out_frames(videos)
    truth = tw.ground_truth(photos)
    out = tw.translate_per_frame(pipe, photos, seed=args.seed)
    check = {
        "frames": len(photos),
        "psnr_photo_to_truth": tw.psnr(photos, truth),
        "psnr_translated_to_truth": tw.psnr(out, truth),
    }
    seconds["check"] = time.perf_counter() - t0
    log(
        f"check on {len(photos)} held-out frames (per-frame SDEdit, strength {tw.TOY_STRENGTH}, '{tw.PAINTING}'): "
        f"PSNR to the true painting {check['psnr_translated_to_truth']:.2f} dB vs the photo's "
        f"{check['psnr_photo_to_truth']:.2f} dB"
    )
    record = {
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "train_clips": list(tw.TRAIN_CLIPS),
        "train_fraction": tw.TRAIN_FRACTION,
        "images": len(images),
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
        "vae_scaling_factor": scaling,
        "vae_reconstruction_psnr": vae_psnr,
        "vae_loss": vae_curve,
        "unet_loss": unet_curve,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "check": check,
    }
    path = tw.save_toy_checkpoint(args.out, unet, vae, text_encoder, record)
    log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    log(json.dumps({k: v for k, v in record.items() if k not in ("vae_loss", "unet_loss")}))


if __name__ == "__main__":
    main()
