"""GMFlow as a :class:`~fresco_v2v.flow.FlowEstimator`: checkpoint lookup, strict loading, padding, batching."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...devices import resolve_device
from ...errors import ModelNotFound
from .model import GMFlow

logger = logging.getLogger(__name__)

#: The checkpoint the FRESCO and Rerender-A-Video install scripts download (GMFlow trained up to Sintel).
CHECKPOINT_NAME = "gmflow_sintel-0c07dcb3.pth"
#: Attention windows per side at inference (what FRESCO passes: attn_splits_list=[2]); sides are padded to a
#: multiple of 8 (the backbone) times this.
ATTENTION_SPLITS = 2


def checkpoint_folders() -> list[Path]:
    """Where ``gmflow`` without a path looks, in order: ./model/ (the authors' layout), ./models/, torch hub's."""
    return [Path("model"), Path("models"), Path(torch.hub.get_dir()) / "checkpoints"]


def find_checkpoint() -> Path | None:
    """The first ``CHECKPOINT_NAME`` in :func:`checkpoint_folders`, or None."""
    for folder in checkpoint_folders():
        p = folder / CHECKPOINT_NAME
        if p.is_file():
            return p
    return None


def missing_message() -> str:
    looked = ", ".join(str(f.resolve() / CHECKPOINT_NAME) for f in checkpoint_folders())
    return (
        f"no GMFlow checkpoint found (looked for {looked}). Put {CHECKPOINT_NAME} (the public GMFlow Sintel "
        "checkpoint the FRESCO install script downloads) in one of those folders, or pass its path as "
        "--flow gmflow:PATH; or use --flow dis, which needs no weights"
    )


def load_gmflow(path: str | os.PathLike) -> GMFlow:
    """A :class:`GMFlow` with the weights of ``path`` (``{'model': state_dict}`` or a bare state dict), loaded with
    ``weights_only=True`` (no code runs) and ``strict=True`` (every tensor has its place)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"{path}: no such GMFlow checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files: one message
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        raise ModelNotFound(f"{path}: not a readable checkpoint ({reason})") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFound(f"{path}: expected a GMFlow state dict (or {{'model': state_dict}})")
    model = GMFlow()
    mine = model.state_dict()
    missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    wrong = sorted(k for k in set(mine) & set(state) if mine[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ModelNotFound(
            f"{path}: not the GMFlow Sintel model this loader expects (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {wrong[:3]}; {len(missing)}/{len(unexpected)}/{len(wrong)} in all)"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


class GMFlowEstimator:
    """Flows from a loaded :class:`GMFlow`; both directions come from one forward pass (``bidirectional``)."""

    def __init__(self, model: GMFlow, device: torch.device | str | None = None, name: str = "gmflow"):
        self.device = resolve_device(device)  # None: the accelerator torch has, else the CPU
        self.model = model.to(self.device).eval()
        self.name = name
        #: Consecutive-frame pairs per forward pass in keyframe flow (batched on a GPU; one at a time on the CPU,
        #: where batching gains nothing and costs memory).
        self.pairs_per_call = 1 if self.device.type == "cpu" else 4

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device=None) -> GMFlowEstimator:
        if path is None:
            path = find_checkpoint()
            if path is None:
                raise ModelNotFound(missing_message())
        logger.info("GMFlow weights from %s", path)
        return cls(load_gmflow(path), device, name=f"gmflow:{path}")

    @torch.no_grad()
    def flows(self, srcs: np.ndarray, dsts: np.ndarray, bidirectional: bool = True) -> tuple[np.ndarray, ...]:
        """[B, H, W, 3] uint8 pairs -> (fwd [B, H, W, 2],) or (fwd, bwd), float32, at the frames' size.

        Any size: padded (edge replication, centred) to a multiple of 16 inside, cropped back after.
        """
        a = torch.from_numpy(np.ascontiguousarray(srcs)).permute(0, 3, 1, 2).to(self.device, torch.float32)
        b = torch.from_numpy(np.ascontiguousarray(dsts)).permute(0, 3, 1, 2).to(self.device, torch.float32)
        h, w = a.shape[2:]
        m = 8 * ATTENTION_SPLITS
        ph, pw = (-h) % m, (-w) % m
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if ph or pw:
            a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
        flow = self.model(a, b, ATTENTION_SPLITS, bidirectional)[:, :, pad[2] : pad[2] + h, pad[0] : pad[0] + w]
        out = flow.permute(0, 2, 3, 1).float().cpu().numpy()
        n = srcs.shape[0]
        return (out[:n], out[n:]) if bidirectional else (out,)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return self.flows(src[None], dst[None], bidirectional=False)[0][0]

    def bidirectional(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fwd, bwd = self.flows(src[None], dst[None])
        return fwd[0], bwd[0]
