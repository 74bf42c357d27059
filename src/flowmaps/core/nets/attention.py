"""Multi-head attention ``softmax(q kᵀ/√d) v``: the fused kernel (``scaled_dot_product_attention``) everywhere
except inside forward-mode differentiation, where the fused kernels have no JVP and it is written out.

Code that runs ``torch.func.jvp`` through a network enters :func:`written_out` (the flow-map objectives' JVP
does, :func:`flowmaps.core.objectives.mapbase.jvp_map`); teacher training, sampling and pair generation get the
fused kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

_depth = 0


@contextmanager
def written_out() -> Iterator[None]:
    """Inside: attention by explicit softmax and products (forward-mode AD passes through it)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q kᵀ/√d) v`` for (B, heads, L, d) queries, keys and values."""
    if _depth:
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return att @ v
    return F.scaled_dot_product_attention(q, k, v)
