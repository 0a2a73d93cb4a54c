"""Where computations run: CUDA, then Apple's MPS, then the CPU.

Every coursekit function that creates tensors or models takes ``device`` as an argument; this module
turns the course-wide default ``"auto"`` into a real :class:`torch.device` and gives the matching
mixed-precision context (bf16 autocast on CUDA, full precision everywhere else).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

DeviceLike = str | torch.device


def get_device(device: DeviceLike = "auto") -> torch.device:
    """Resolve ``device`` to a :class:`torch.device`.

    Args:
        device: ``"auto"`` picks CUDA if a GPU is visible, then MPS (Apple silicon), then the CPU.
            Anything else (``"cpu"``, ``"cuda:1"``, a ``torch.device``) is used as given, after
            checking that it is available on this machine.

    Returns:
        The device to put tensors and models on.

    Raises:
        ValueError: if the device string is not one torch understands.
        RuntimeError: if a CUDA or MPS device is asked for on a machine that has none.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device torch understands; use 'auto', 'cpu', 'cuda' or 'mps'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} asked for CUDA, but torch sees no GPU; use 'auto' or 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={device!r} asked for MPS, but it is not available; use 'auto' or 'cpu'")
    return resolved


def autocast(device: DeviceLike = "auto") -> ContextManager:
    """Mixed precision where it pays: bf16 autocast on CUDA, a no-op context elsewhere.

    CPU autocast would slow the small course models down rather than speed them up, so it stays off.
    """
    resolved = get_device(device)
    if resolved.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
