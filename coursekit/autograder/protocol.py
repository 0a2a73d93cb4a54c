"""The messages between the grader and the sandboxed learner process: framing, and what counts as plain data.

Both sides use this module. A message is a length header and a ``torch.save`` payload; the grader reads
it with ``torch.load(weights_only=True)``, so a reply can hold tensors, numbers, strings and containers of
those, and nothing a learner forges can run code in the grader. Objects that are not plain data never
cross: the learner's side keeps them and sends a handle, ``{"__handle__": id, "type": ..., "callable": ...}``.
"""

from __future__ import annotations

import io
import os
import select
import struct
import time
from typing import Any

import torch

HEADER = struct.Struct("!Q")
PLAIN_SCALARS = (type(None), bool, int, float, str, complex)
MAX_DEPTH = 8


class ProtocolError(RuntimeError):
    """A message that is too large or not valid data."""


def write_message(fd: int, payload: Any) -> None:
    """Send one message (a header with its length, then the ``torch.save`` bytes)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    os.write(fd, HEADER.pack(len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, remaining = [], n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None, max_bytes: int = 1 << 31) -> Any:
    """Receive one message; ``TimeoutError`` past ``deadline`` (``time.monotonic()``), ``EOFError`` if the pipe closed.

    Raises:
        ProtocolError: a message larger than ``max_bytes``.
    """
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > max_bytes:
        raise ProtocolError(f"the submission sent {size} bytes in one message")
    # weights_only: tensors and plain containers only; a crafted pickle cannot run code here.
    return torch.load(io.BytesIO(_read_exact(fd, size, deadline)), weights_only=True)


def is_plain(obj: Any, depth: int = 0) -> bool:
    """True for data that can cross as a copy: scalars, strings, tensors, dtypes, and lists/tuples/dicts of them."""
    if isinstance(obj, PLAIN_SCALARS) or isinstance(obj, (torch.Tensor, torch.dtype, torch.Size)):
        return True
    if depth > MAX_DEPTH:
        return False
    if isinstance(obj, (list, tuple)):
        return all(is_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and is_plain(v, depth + 1) for k, v in obj.items())
    return False


def is_handle(obj: Any) -> bool:
    return isinstance(obj, dict) and "__handle__" in obj
