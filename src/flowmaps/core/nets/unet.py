"""A two-time conditioned UNet for images (DDPM++ / ADM style), usable for every model form.

``net(x, emb, label) -> out`` with ``x`` of shape (B, C, H, W) and ``emb`` the wrapper's time embedding
(``[emb(s), emb(t - s)]``, see ``models.FlowMap``). The embedding goes through an MLP to ``4 · channels`` and
modulates every residual block by ``h ← GN(h) · (1 + scale) + shift``; a class label (``num_classes`` > 0) adds a
learned embedding (``label=None`` leaves it out). Resolution ``r`` runs at ``channels · mult[i]`` for level
``i`` (r = H / 2^i), with ``num_res_blocks`` blocks per level, self-attention at ``attn_resolutions``, and skip
connections from the encoder to the decoder. The output convolution starts at zero: an untrained flow map is the
identity. Attention uses the fused kernel except under a JVP (:mod:`.attention`). ``checkpointing`` recomputes
each block's activations in the backward pass instead of keeping them (less memory, about one more forward).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...errors import ConfigError
from ..models import ModelOptions
from .attention import attention


class UNetOptions(ModelOptions):
    """``model.net: unet`` — the two-time UNet for images (C, H, W)."""

    net: Literal["unet"] = "unet"
    channels: int = Field(64, ge=1)
    mult: tuple[int, ...] = Field((1, 2, 2), min_length=1)
    num_res_blocks: int = Field(2, ge=1)
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = Field(0.0, ge=0, lt=1)
    head_dim: int = Field(64, ge=1)
    checkpointing: bool = Field(False, description="recompute block activations in the backward pass")

    def build(self, shape: tuple[int, ...], emb_dim: int) -> UNet:
        if len(shape) != 3:
            raise ConfigError(f"model.net=unet needs image data of shape (C, H, W); the data has shape {tuple(shape)}")
        return UNet(shape, emb_dim, self.channels, self.mult, self.num_res_blocks, self.attn_resolutions,
                    self.dropout, self.label_embeddings, self.head_dim, self.checkpointing)


def _groups(ch: int, max_groups: int = 32) -> int:
    """The largest group count ≤ max_groups that divides ch (GroupNorm)."""
    return math.gcd(ch, max_groups)


class ResBlock(nn.Module):
    """``h = conv(act(GN(x)·(1+a)+b))`` twice (dropout before the second), plus a (1×1 if needed) skip of x."""

    def __init__(self, cin: int, cout: int, emb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_ch, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return (self.skip(x) + self.conv2(self.drop(h))) / math.sqrt(2)


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions: ``softmax(q kᵀ/√d) v``, residual."""

    def __init__(self, ch: int, head_dim: int = 64) -> None:
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm, self.qkv, self.proj = nn.GroupNorm(_groups(ch), ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2)


class UNet(nn.Module):
    """Encoder–decoder over ``len(mult)`` resolutions; see the module docstring."""

    def __init__(self, shape: tuple[int, ...], emb_dim: int, channels: int = 64, mult: tuple[int, ...] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: tuple[int, ...] = (), dropout: float = 0.0,
                 num_classes: int = 0, head_dim: int = 64, checkpointing: bool = False) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        if len(shape) != 3:
            raise ValueError(f"UNet needs images of shape (C, H, W), got {tuple(shape)}")
        cin, height, width = (int(s) for s in shape)
        mult = tuple(int(m) for m in mult)
        if not mult or min(mult) < 1 or channels < 1 or num_res_blocks < 1:
            raise ValueError(f"UNet: channels, mult and num_res_blocks must be >= 1 (got {channels}, {mult}, "
                             f"{num_res_blocks})")
        down = 2 ** (len(mult) - 1)
        if height % down or width % down:
            raise ValueError(f"UNet with {len(mult)} levels halves the image {len(mult) - 1} times: {height}×{width} "
                             f"must be divisible by {down}")
        if not 0 <= dropout < 1:
            raise ValueError(f"UNet dropout must lie in [0, 1), got {dropout}")
        attn = {int(r) for r in attn_resolutions}
        levels = [height // 2**i for i in range(len(mult))]
        if attn - set(levels):
            raise ValueError(f"UNet attention at resolutions {sorted(attn - set(levels))}: a {height}×{width} image "
                             f"runs at {levels} in a {len(mult)}-level UNet")
        emb_ch = 4 * channels
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.label_emb = nn.Embedding(num_classes, emb_ch) if num_classes > 0 else None
        self.inp = nn.Conv2d(cin, channels, 3, padding=1)

        self.enc = nn.ModuleList()
        skips, ch, res = [channels], channels, height
        for i, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.enc.append(nn.ModuleList([ResBlock(ch, channels * m, emb_ch, dropout)]
                                              + ([Attention(channels * m, head_dim)] if res in attn else [])))
                ch = channels * m
                skips.append(ch)
            if i < len(mult) - 1:
                self.enc.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_ch, dropout), Attention(ch, head_dim),
                                  ResBlock(ch, ch, emb_ch, dropout)])
        self.dec = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                self.dec.append(nn.ModuleList([ResBlock(ch + skips.pop(), channels * m, emb_ch, dropout)]
                                              + ([Attention(channels * m, head_dim)] if res in attn else [])))
                ch = channels * m
            if i > 0:
                self.dec.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.Conv2d(ch, ch, 3, padding=1)]))
                res *= 2
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, cin, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def last_layer(self) -> Tensor:
        """The output convolution's weight (for the adversarial loss's adaptive weight)."""
        return self.out.weight

    def _run(self, layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._blocks, layers, h, emb, use_reentrant=False)
        return self._blocks(layers, h, emb)

    @staticmethod
    def _blocks(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, emb: Tensor, label: Tensor | None = None) -> Tensor:
        e = self.time(emb)
        if self.label_emb is not None and label is not None:
            e = e + self.label_emb(label)
        e = F.silu(e)
        h = self.inp(x)
        hs = [h]
        for layers in self.enc:
            h = self._run(layers, h, e)
            hs.append(h)
        h = self._run(self.mid, h, e)
        for layers in self.dec:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layers, h, e)
        return self.out(F.silu(self.out_norm(h)))
