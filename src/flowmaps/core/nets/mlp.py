"""A residual MLP for vector data, conditioned on a time embedding."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..models import ModelOptions


class MLPOptions(ModelOptions):
    """``model.net: mlp`` — a residual MLP on flattened inputs."""

    net: Literal["mlp"] = "mlp"
    width: int = Field(256, ge=1)
    depth: int = Field(4, ge=1)
    act: Literal["gelu", "silu", "relu"] = "gelu"
    fourier: int = Field(0, ge=0, description="random Fourier features of the input (0: none)")
    fourier_scale: float = Field(1.0, gt=0, description="standard deviation of their frequencies")

    def build(self, shape: tuple[int, ...], emb_dim: int) -> MLP:
        return MLP(math.prod(shape), emb_dim, self.width, self.depth, self.label_embeddings, self.act, self.fourier,
                   self.fourier_scale)


class MLP(nn.Module):
    """``out = W_out · h_L``, ``h_{l+1} = h_l + act(W_l [h_l, emb])`` on flattened inputs of shape (B, D).

    ``emb`` is the wrapper's time embedding (s and t - s); ``num_classes`` > 0 adds a label embedding.
    ``fourier`` > 0 feeds ``h_0 = [x, sin(2π B x), cos(2π B x)]`` with fixed frequencies ``B ~ N(0, scale²)``
    (``fourier`` × D): random Fourier features, which let an MLP represent the steep parts of a low-dimensional
    map that it otherwise smooths over. The output layer starts at zero, so an untrained flow map is the identity.
    """

    def __init__(self, dim: int, emb_dim: int, width: int = 256, depth: int = 4, num_classes: int = 0,
                 act: str = "gelu", fourier: int = 0, fourier_scale: float = 1.0) -> None:
        super().__init__()
        self.act = {"gelu": nn.GELU(), "silu": nn.SiLU(), "relu": nn.ReLU()}[act]
        self.register_buffer("freqs", fourier_scale * torch.randn(fourier, dim, generator=torch.Generator()
                                                                  .manual_seed(0)) if fourier else None)
        self.inp = nn.Linear(dim + 2 * fourier + emb_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width + emb_dim, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.label_emb = nn.Embedding(num_classes, emb_dim) if num_classes > 0 else None

    def forward(self, x: Tensor, emb: Tensor, label: Tensor | None = None) -> Tensor:
        if self.label_emb is not None and label is not None:
            emb = emb + self.label_emb(label)
        shape, x = x.shape, x.flatten(1)
        if self.freqs is not None:
            phase = 2 * math.pi * x @ self.freqs.T
            x = torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=1)
        h = self.act(self.inp(torch.cat([x, emb], dim=1)))
        for layer in self.hidden:
            h = h + self.act(layer(torch.cat([h, emb], dim=1)))
        return self.out(h).reshape(shape)
