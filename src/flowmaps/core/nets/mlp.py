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

    def build(self, shape: tuple[int, ...], emb_dim: int) -> MLP:
        return MLP(math.prod(shape), emb_dim, self.width, self.depth, self.label_embeddings, self.act)


class MLP(nn.Module):
    """``out = W_out · h_L``, ``h_{l+1} = h_l + act(W_l [h_l, emb])`` on flattened inputs of shape (B, D).

    ``emb`` is the wrapper's time embedding (s and t - s); ``num_classes`` > 0 adds a label embedding.
    The output layer starts at zero, so an untrained flow map is the identity.
    """

    def __init__(self, dim: int, emb_dim: int, width: int = 256, depth: int = 4, num_classes: int = 0,
                 act: str = "gelu") -> None:
        super().__init__()
        self.act = {"gelu": nn.GELU(), "silu": nn.SiLU(), "relu": nn.ReLU()}[act]
        self.inp = nn.Linear(dim + emb_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width + emb_dim, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.label_emb = nn.Embedding(num_classes, emb_dim) if num_classes > 0 else None

    def forward(self, x: Tensor, emb: Tensor, label: Tensor | None = None) -> Tensor:
        if self.label_emb is not None and label is not None:
            emb = emb + self.label_emb(label)
        shape = x.shape
        h = self.act(self.inp(torch.cat([x.flatten(1), emb], dim=1)))
        for layer in self.hidden:
            h = h + self.act(layer(torch.cat([h, emb], dim=1)))
        return self.out(h).reshape(shape)
