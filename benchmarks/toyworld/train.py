"""Train the toy world's latent diffusion stack on a CPU, from a fixed seed, and write one .safetensors checkpoint.

    python benchmarks/toyworld/train.py [--out src/fresco_v2v/data/toyworld.safetensors] [--threads 2] [--seed 0]
                                        [--vae-steps 800] [--vae-flat 0.25] [--vae-lowpass 1] [--vae-colour 1]
                                        [--vae-groups 4] [--vae-seed 0]
                                        [--unet-steps 2600] [--stage1-scenes 1296]
                                        [--stage1 CHECKPOINT]
                                        [--steps 3600] [--lr 5e-4] [--scenes 1296] [--pair 0.5] [--save-every 1200]

Data (see ``fresco_v2v.toyworld``): the first 80% of the frames of dog.mp4 and music.mp4 (../shared/data/videos) at
128x128, each frame as is plus two recoloured, randomly mirrored variants (channel order, hue, saturation,
brightness), each as "a photo" (the image), "a painting" (cv2.stylization) and "a pencil drawing"
(cv2.pencilSketch). Stage 2 adds frames of generated shape scenes (``fresco_v2v.synthetic.shape_scene_clip``:
shapes of flat, gradient or textured fill moving over backgrounds; never the demo's scene).
boxer-punching-towards-camera.mp4 and car-turn.mp4 are never seen.

Stage 1, on the real frames and ``--stage1-scenes`` shape-scene frames (``--stage1 CHECKPOINT`` reads a stage 1
result from a file instead; the first checkpoint's recipe: ``--vae-steps 400 --vae-flat 0 --vae-lowpass 0
--vae-colour 0 --vae-groups 16 --vae-seed -1 --stage1-scenes 0``):
1. VAE (AutoencoderKL, latent factor 4): L1 reconstruction + a small KL term on random 64x64 crops, with the colour
   measures of the toy-world README ("Training"): a quarter of each batch flat random-colour crops, an L1 term on
   8x8 block means, the first three latent channels pulled to their block's mean colour, 4 GroupNorm groups, the
   VAE's own initial seed (``--vae-flat``, ``--vae-lowpass``, ``--vae-colour``, ``--vae-groups``, ``--vae-seed``).
2. Latents of every training image (posterior mean x SD's convention of a scaling factor = 1 / latent std).
3. UNet (SD1.5 block types, epsilon prediction, SD1.5's DDPM schedule) on random 16x16 crops of the 32x32
   latents (a fully convolutional net: 4x cheaper than whole latents; it runs on whole 32x32 latents later),
   batches of 16, 3/4 of the timesteps drawn below t = 700 (SDEdit at strength <= 0.7 never goes higher),
   captions dropped 10% of the time for classifier-free guidance. The small CLIP text encoder is trained with it
   (SD freezes a pretrained CLIP; a random one barely tells the four captions apart).

Stage 2, what the earlier measurements pointed to (README here): a canny ControlNet (made from the UNet, trained
with it and the text encoder) whose condition is the source photo's edges, on the data with the shape scenes, and
a share ``--pair`` of the styled samples as translation pairs (SDEdit's job: the photo's latent noised, the styled
latent as the answer; :func:`translation_batch`).

Check: per-frame SDEdit (the toy world's strength and steps, "a painting", guidance 1, 2, 3) of held-out frames,
PSNR to the true painting vs the photo's PSNR to it. The end-to-end figures come from
``benchmarks/toyworld_eval.py``. The training log (losses every 50 steps, seconds per stage) is printed and stored
in the checkpoint's metadata; the checkpoint is also written every ``--save-every`` stage-2 steps.
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
from vae_probe import flat_patches, latent_colour_probe, round_trip

from fresco_v2v import toyworld as tw
from fresco_v2v.control import canny_condition
from fresco_v2v.stacks import sd15_scheduler
from fresco_v2v.synthetic import TRAIN_SCENE_SEEDS, demo_clip, shape_scene_clip
from fresco_v2v.video import read_video

VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"


def log(msg: str) -> None:
    print(msg, flush=True)


#: Packages whose version can change the trained weights (data decoding, filters, model construction, maths): a
#: rerun matched bit for bit in the same venv, and did not in a fresh one with newer versions of some of these
#: (README "Reproduction"); which of them matters is not isolated.
WEIGHT_PACKAGES = ("torch", "numpy", "opencv-python-headless", "av", "diffusers", "transformers")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in WEIGHT_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


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


def scene_photos(count: int, seed: int) -> list[np.ndarray]:
    """``count`` frames of generated shape scenes (``fresco_v2v.synthetic.shape_scene_clip``): two frames 15 apart
    of each scene, scene seeds from TRAIN_SCENE_SEEDS + 1000 * seed on (never the demo's)."""
    out = []
    for k in range((count + 1) // 2):
        clip = shape_scene_clip(16, tw.TOY_SIZE, tw.TOY_SIZE, TRAIN_SCENE_SEEDS + 1000 * seed + k)
        out.extend([clip[0], clip[-1]])
    return out[:count]


def load_training_images(videos: Path, seed: int, variants: int = 3, scenes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """images [M, 128, 128, 3] uint8 and caption ids [M] (1 photo, 2 painting, 3 pencil).

    Each training frame as is plus ``variants - 1`` recoloured variants (:func:`augment_photo`), and ``scenes``
    frames of generated shape scenes, each in the three captions: images are [photos; paintings; pencil drawings]
    of the same photos.
    """
    rng = np.random.default_rng(seed)
    photos = scene_photos(scenes, seed) if scenes else []
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


def train_vae(
    vae,
    images: np.ndarray,
    steps: int,
    gen: torch.Generator,
    batch: int = 16,
    crop: int = 64,
    *,
    flat: float = 0.0,
    lowpass: float = 0.0,
    colour: float = 0.0,
):
    """L1 reconstruction + a small KL term on random crops (the posterior sampled, as in LDM's VAE training).

    ``flat``: the share of each batch that is flat crops of random colours, and ``lowpass``: the weight of an L1 term
    on 8x8 block means. Both push the VAE to carry flat, saturated colour, which reconstruction of the frames alone
    leaves grey (vae_probe.log). ``colour``: the weight of an L1 term pulling the first three latent channels (the
    posterior mean) to the RGB mean of their 4x4 pixel block, so that colour is carried linearly and with a large
    share of the latent's variance, as in SD's latents (whose RGB is close to a linear map of the latent). With it
    the encoder keeps a flat colour, which the other two terms alone did not (toy-world README, "Training").
    """
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    vae.train()
    curve, acc = [], []
    n, size = len(images), images.shape[1]
    n_flat = int(round(flat * batch))
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen).numpy()
        ys, xs = torch.randint(0, size - crop + 1, (2, batch), generator=gen).numpy()
        crops = np.stack([images[i, y : y + crop, xx : xx + crop] for i, y, xx in zip(idx, ys, xs)])
        if n_flat:
            crops[:n_flat] = torch.randint(0, 256, (n_flat, 3), generator=gen).numpy().astype(np.uint8)[:, None, None]
        x = to_unit(crops)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.l1_loss(rec, x) + 1e-6 * posterior.kl().mean()
        if colour:
            loss = loss + colour * F.l1_loss(posterior.mean[:, :3], F.avg_pool2d(x, 4))
        if lowpass:
            loss = loss + lowpass * F.l1_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))
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


def latent_crops(latents: torch.Tensor, index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, crop: int):
    """[B, C, crop, crop]: the crops of ``latents[index]`` at the origins (ys, xs) (any [N, C, H, W] tensor)."""
    rows = (ys[:, None] + torch.arange(crop))[:, :, None]  # [B, crop, 1]
    cols = (xs[:, None] + torch.arange(crop))[:, None, :]  # [B, 1, crop]
    return latents[index[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@dataclass
class DiffusionData:
    """What the diffusion stage samples from: images are [photos; paintings; pencil drawings] of the same photos."""

    latents: torch.Tensor  # [M, 4, 32, 32] scaled latents of every training image
    labels: torch.Tensor  # [M] caption id (1 photo, 2 painting, 3 pencil)
    edges: torch.Tensor  # [P, 1, 128, 128] canny edges of each photo in [0, 1], as the pipeline computes them
    caption_ids: torch.Tensor  # [4, 77] token ids of "", photo, painting, pencil


def translation_batch(data: DiffusionData, alphas, gen: torch.Generator, batch: int, crop: int, pair: float):
    """One batch of the diffusion stage: (x_t, t, caption, condition crops, eps target, loss weight).

    Plain DDPM samples (:func:`sample_noisy_batch`), and for a fraction ``pair`` of the captioned styled samples a
    *translation pair* instead: SDEdit's job. The photo's latent is noised, and the target is the noise that makes
    the styled latent the denoised answer, eps' = (x_t - sqrt(a_t) z_styled) / sqrt(1 - a_t), weighted by
    min(SNR, 5) / SNR (Min-SNR, Hang et al. 2023: that target grows with the SNR). The condition is always the
    canny edges of the source photo, as the pipeline gives the ControlNet.
    """
    factor = 4  # VAE latent factor
    n_photos = len(data.edges)
    nb = sample_noisy_batch(data.latents, data.labels, alphas, gen, batch, crop)
    photo = nb.index % n_photos
    is_pair = (data.labels[nb.index] >= 2) & (nb.captions > 0) & (torch.rand(batch, generator=gen) < pair)
    a = alphas[nb.t].view(-1, 1, 1, 1)
    xt_pair = a.sqrt() * latent_crops(data.latents, photo, nb.ys, nb.xs, crop) + (1 - a).sqrt() * nb.eps
    z_styled = latent_crops(data.latents, nb.index, nb.ys, nb.xs, crop)
    eps_pair = (xt_pair - a.sqrt() * z_styled) / (1 - a).sqrt()
    m = is_pair.view(-1, 1, 1, 1)
    snr = alphas[nb.t] / (1 - alphas[nb.t])
    weight = torch.where(is_pair, snr.clamp(max=5.0) / snr, torch.ones_like(snr))
    cond = latent_crops(data.edges, photo, nb.ys * factor, nb.xs * factor, crop * factor).expand(-1, 3, -1, -1)
    return torch.where(m, xt_pair, nb.xt), nb.t, nb.captions, cond, torch.where(m, eps_pair, nb.eps), weight


def train_diffusion(
    unet,
    controlnet,
    text_encoder,
    data: DiffusionData,
    steps: int,
    gen: torch.Generator,
    *,
    pair: float,
    batch: int = 16,
    crop: int = 16,
    lr: float = 1e-3,
    on_save=None,
    save_every: int = 0,
):
    """UNet, canny ControlNet and CLIP text encoder together (the random text encoder alone barely tells the
    captions apart; the ControlNet gives the structure SDEdit's noised latent loses). ``on_save(step, curve)`` every
    ``save_every`` steps: a usable checkpoint while a long run goes on."""
    alphas = sd15_scheduler().alphas_cumprod
    params = [*unet.parameters(), *controlnet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    models = (unet, controlnet, text_encoder)
    for m in models:
        m.train()
    curve, acc, t0 = [], [], time.perf_counter()
    for step in range(steps):
        xt, t, cap, cond, target, weight = translation_batch(data, alphas, gen, batch, crop, pair)
        emb = text_encoder(data.caption_ids)[0][cap]  # [B, 77, C]
        down, mid = controlnet(xt, t, encoder_hidden_states=emb, controlnet_cond=cond, return_dict=False)
        pred = unet(
            xt, t, encoder_hidden_states=emb, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        loss = ((pred - target).square().mean((1, 2, 3)) * weight).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            curve.append([step + 1, float(np.mean(acc))])
            log(f"  diffusion step {step + 1:5d}/{steps}  loss {np.mean(acc):.4f}  {time.perf_counter() - t0:.0f} s")
            acc = []
        if on_save is not None and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            for m in models:
                m.eval()
            on_save(step + 1, curve)
            for m in models:
                m.train()
    for m in models:
        m.eval()
    return curve


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


def check(pipe, photos: np.ndarray, truth: np.ndarray, seed: int, guidance: tuple[float, ...]) -> dict:
    """Per-frame SDEdit ("a painting", the toy world's strength and steps) of held-out frames: PSNR to the truth."""
    out = {"frames": len(photos), "psnr_photo_to_truth": tw.psnr(photos, truth)}
    for g in guidance:
        frames = tw.translate_per_frame(pipe, photos, seed=seed, guidance_scale=g)
        out[f"psnr_translated_to_truth_guidance_{g:g}"] = tw.psnr(frames, truth)
    return out


def stage1(args: argparse.Namespace, videos: Path, seconds: dict) -> tuple:
    """The VAE, then the UNet and text encoder, on the real training frames and ``--stage1-scenes`` shape-scene
    frames (0: the first checkpoint's recipe, whose weights reproduce bit for bit: README).

    Returns (unet, vae, text_encoder, tokenizer, record, (images, labels, scaled latents))."""
    t0 = time.perf_counter()
    images, labels = load_training_images(videos, args.seed, scenes=args.stage1_scenes)
    seconds["stage1_data"] = time.perf_counter() - t0
    log(f"stage 1 data: {len(images)} training images ({args.stage1_scenes} shape-scene frames), x 3 captions")
    unet, vae, text_encoder, tokenizer = tw.build_toy_models(args.seed)
    if args.vae_groups != tw.VAE_CONFIG["norm_num_groups"] or args.vae_seed >= 0:
        from diffusers import AutoencoderKL

        if args.vae_seed >= 0:  # the VAE's own initial weights (else drawn after the UNet's, as before)
            torch.manual_seed(args.vae_seed)
        vae = AutoencoderKL(**dict(tw.VAE_CONFIG, norm_num_groups=args.vae_groups))
    gen = torch.Generator().manual_seed(args.seed)
    log(
        f"parameters: unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, vae "
        f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M"
    )
    t0 = time.perf_counter()
    vae_curve = train_vae(
        vae, images, args.vae_steps, gen, flat=args.vae_flat, lowpass=args.vae_lowpass, colour=args.vae_colour
    )
    seconds["vae"] = time.perf_counter() - t0
    # the VAE's colour figures first (vae_probe.py): a VAE that loses colour is not worth the diffusion stages
    sample = images[:: max(1, len(images) // 64)]
    vae_psnr = tw.psnr(sample, round_trip(vae, sample))
    demo = demo_clip(num_frames=8)  # the demo's scene is never a training scene
    demo_psnr = tw.psnr(demo, round_trip(vae, demo))
    flat = flat_patches()
    flat_psnr = tw.psnr(flat, round_trip(vae, flat))
    probe_centre, probe_whole, probe_std = latent_colour_probe(vae)
    log(
        f"VAE reconstruction PSNR {vae_psnr:.2f} dB (the demo's scene: {demo_psnr:.2f}, flat patches: "
        f"{flat_psnr:.2f}); flat colour from the latent: rms error {probe_centre:.1f} levels from the centre, "
        f"{probe_whole:.1f} from the whole latent (RGB std {probe_std:.1f})"
    )
    t0 = time.perf_counter()
    raw = encode_all(vae, images)
    scaling = float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=scaling)
    seconds["stage1_latents"] = time.perf_counter() - t0
    log(f"scaling factor {scaling:.4f}")
    ids = caption_ids(tokenizer)
    t0 = time.perf_counter()
    unet_curve = train_unet(unet, text_encoder, raw * scaling, labels, ids, args.unet_steps, gen)
    seconds["unet"] = time.perf_counter() - t0
    record = dict(
        images=len(images),
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        vae_scaling_factor=scaling,
        vae_reconstruction_psnr=vae_psnr,
        vae_reconstruction_psnr_demo_scene=demo_psnr,
        vae_reconstruction_psnr_flat_patches=flat_psnr,
        vae_latent_colour_rms_error=probe_centre,
        vae_flat=args.vae_flat,
        vae_lowpass=args.vae_lowpass,
        vae_colour=args.vae_colour,
        vae_groups=args.vae_groups,
        vae_seed=args.vae_seed,
        vae_loss=vae_curve,
        unet_loss=unet_curve,
        stage1_scenes=args.stage1_scenes,
    )
    return unet, vae, text_encoder, tokenizer, record, (images, labels, raw * scaling)


def caption_ids(tokenizer) -> torch.Tensor:
    """[4, 77] token ids of the captions "", photo, painting, pencil (caption id = row)."""
    captions = ["", tw.PHOTO, tw.PAINTING, tw.PENCIL]
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def from_checkpoint(path: str) -> tuple:
    """Stage 1's output read back from a toy checkpoint (its float16 weights): (unet, vae, te, tokenizer, record)."""
    pipe = tw.load_toy_pipeline(f"toy:{path}")
    record = {k: v for k, v in tw.read_toy_record(path).items() if k not in ("check", "seconds", "threads")}
    return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(tw.BUNDLED_CHECKPOINT))
    ap.add_argument("--videos", default=str(VIDEOS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=800)
    ap.add_argument("--vae-flat", type=float, default=0.25, help="share of flat random-colour crops in VAE batches")
    ap.add_argument("--vae-lowpass", type=float, default=1.0, help="weight of the VAE's L1 loss on 8x8 block means")
    ap.add_argument(
        "--vae-colour", type=float, default=1.0, help="weight of the VAE's latent-colour L1 term (see train_vae)"
    )
    ap.add_argument(
        "--vae-groups", type=int, default=4, help="GroupNorm groups of the VAE (fresco_v2v.toyworld.VAE_CONFIG: 16)"
    )
    ap.add_argument(
        "--vae-seed",
        type=int,
        default=0,
        help="the VAE's initial weights from this seed (-1: drawn after the UNet's, as for the first checkpoints)",
    )
    ap.add_argument("--unet-steps", type=int, default=2600)
    ap.add_argument(
        "--stage1-scenes",
        type=int,
        default=1296,
        help="stage 1: generated shape-scene frames for the VAE and UNet (0: the first checkpoint's recipe)",
    )
    ap.add_argument(
        "--stage1",
        default=None,
        metavar="CHECKPOINT",
        help="skip stage 1 and start stage 2 from this toy checkpoint's UNet, VAE and text encoder",
    )
    ap.add_argument("--steps", type=int, default=3600, help="stage 2 steps")
    ap.add_argument("--lr", type=float, default=5e-4, help="stage 2 peak learning rate")
    ap.add_argument("--scenes", type=int, default=1296, help="stage 2: generated shape-scene frames")
    ap.add_argument("--pair", type=float, default=0.5, help="stage 2: share of styled samples that are pairs")
    ap.add_argument("--save-every", type=int, default=1200, help="write the checkpoint every N stage-2 steps")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    videos = Path(args.videos)
    seconds: dict[str, float] = {}
    log(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; seed {args.seed}"
    )
    log("packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()))
    stage1_data = None
    if args.stage1:
        unet, vae, text_encoder, tokenizer, record = from_checkpoint(args.stage1)
        log(f"stage 1: read from {args.stage1}")
    else:
        unet, vae, text_encoder, tokenizer, record, stage1_data = stage1(args, videos, seconds)

    # stage 2: the canny ControlNet, translation pairs and shape scenes, with the UNet and text encoder
    t0 = time.perf_counter()
    if stage1_data is not None and args.stage1_scenes == args.scenes:  # the same images: their latents are made
        images, labels, latents = stage1_data
    else:
        images, labels = load_training_images(videos, args.seed, scenes=args.scenes)
        latents = encode_all(vae, images) * vae.config.scaling_factor
    n_photos = len(images) // 3
    edges = canny_condition(images[:n_photos])[:, :1].contiguous()  # [P, 1, 128, 128]
    seconds["stage2_data"] = time.perf_counter() - t0
    log(
        f"stage 2 data: {len(images)} training images ({n_photos - args.scenes} frames with recoloured variants and "
        f"{args.scenes} shape-scene frames, x 3 captions) and their latents in {seconds['stage2_data']:.1f} s"
    )
    torch.manual_seed(args.seed)
    controlnet = tw.make_toy_controlnet(unet)
    log(f"controlnet: {sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f} M parameters")
    data = DiffusionData(latents, torch.from_numpy(labels), edges, caption_ids(tokenizer))
    record.update(
        seed=args.seed,
        threads=args.threads,
        packages=package_versions(),
        train_clips=list(tw.TRAIN_CLIPS),
        train_fraction=tw.TRAIN_FRACTION,
        stage1_from=Path(args.stage1).name if args.stage1 else None,
        stage2_images=len(images),
        scene_frames=args.scenes,
        stage2_steps=args.steps,
        stage2_lr=args.lr,
        pair_fraction=args.pair,
    )

    def save(step: int, curve: list) -> None:
        partial = dict(record, stage2_steps_done=step, stage2_loss=curve, seconds=dict(seconds))
        tw.save_toy_checkpoint(args.out, unet, vae, text_encoder, partial, controlnet=controlnet)
        log(f"  wrote {args.out} after {step} stage-2 steps")

    gen = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    curve = train_diffusion(
        unet,
        controlnet,
        text_encoder,
        data,
        args.steps,
        gen,
        pair=args.pair,
        lr=args.lr,
        on_save=save,
        save_every=args.save_every,
    )
    seconds["stage2"] = time.perf_counter() - t0
    seconds["train_total"] = sum(seconds.values())
    log(f"training took {seconds['train_total'] / 60:.1f} min ({ {k: round(v, 1) for k, v in seconds.items()} })")
    record["stage2_loss"] = curve

    t0 = time.perf_counter()
    pipe = tw.assemble_pipeline(unet, vae, text_encoder, tokenizer, controlnet=controlnet)
    photos = held_out_frames(videos)
    record["check"] = check(pipe, photos, tw.ground_truth(photos), args.seed, (1.0, 2.0, 3.0))
    seconds["check"] = time.perf_counter() - t0
    log(f"check (per-frame SDEdit, strength {tw.TOY_STRENGTH}, '{tw.PAINTING}'): {record['check']}")
    record["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    path = tw.save_toy_checkpoint(args.out, unet, vae, text_encoder, record, controlnet=controlnet)
    log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    log(json.dumps({k: v for k, v in record.items() if not k.endswith("_loss")}))


if __name__ == "__main__":
    main()
