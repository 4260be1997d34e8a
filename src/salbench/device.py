"""The `device` param shared by every stage."""
from __future__ import annotations

import torch

from .params import ParamsError


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda[:N]``, or ``auto`` (CUDA when available); asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParamsError(f"device={name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"device={name!r} but CUDA is not available here; use cpu or auto")
    return device
