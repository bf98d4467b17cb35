"""Which device and dtype a run uses: "auto" resolves to the current accelerator and its usual precision.

No other module of the package is imported here, so every stage (flow, models, the runner) can ask.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": the current accelerator (CUDA, MPS, ...) when torch has one, else the CPU."""
    if device is None or device == "auto":
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        return torch.device(acc) if acc is not None and torch.accelerator.is_available() else torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError("device", "auto, cpu, or a torch device name", device) from e


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": float16 on an accelerator (half the memory, as SD1.5 is usually run), float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float32": torch.float32,
        "fp32": torch.float32,
    }
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if dtype not in table:
        raise ConfigError("dtype", f"auto or one of {sorted(table)}", dtype)
    return table[dtype]
