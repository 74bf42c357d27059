"""Differentiable augmentation (Zhao et al. 2020, DiffAugment) for discriminator inputs.

The same random transform family is applied to real and generated batches, and gradients pass through it
to the generator. Images (B, C, H, W): brightness, saturation, contrast, translation (1/8 of the size) and
cutout (1/2). Vectors (B, D): random isotropic scaling ``x · e^{0.1 g}`` and a small jitter ``0.02 σ ε``,
the vector analogues of colour and translation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _color(x: Tensor) -> Tensor:
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


def _translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    yy = (gy[None] + dy).clamp(-1, h)  # -1 and h index the zero padding
    xx = (gx[None] + dx).clamp(-1, w)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx_b, yy + 1, xx + 1].permute(0, 3, 1, 2)


def _cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    keep = ~(((gy[None] - cy).abs() <= ch // 2) & ((gx[None] - cx).abs() <= cw // 2))
    return x * keep[:, None].to(x.dtype)


def diff_augment(x: Tensor, scale: float = 1.0) -> Tensor:
    """A random differentiable augmentation of a batch (per-sample parameters); ``scale`` is the data scale."""
    if x.dim() == 4:
        return _cutout(_translation(_color(x)))
    b = x.shape[0]
    shape = (b,) + (1,) * (x.dim() - 1)
    return x * torch.exp(0.1 * torch.randn(shape, device=x.device)) + 0.02 * scale * torch.randn_like(x)
