"""Discriminators for adversarial losses: logits (B,) for a batch of samples (B, *shape)."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from ..options import Options


class DiscOptions(Options):
    """A discriminator: ``width``, ``depth`` for vectors (an MLP); ``channels``, ``levels`` for images (a CNN);
    ``slope`` of the LeakyReLU for both. Unset values take the network's defaults."""

    width: int | None = Field(None, ge=1)
    depth: int | None = Field(None, ge=1)
    channels: int | None = Field(None, ge=1)
    levels: int | None = Field(None, ge=1)
    slope: float = Field(0.2, ge=0)


class MLPDiscriminator(nn.Module):
    """``logit = w · h_L``, ``h_{l+1} = LeakyReLU(W_l h_l)`` on flattened vectors (B, D)."""

    def __init__(self, dim: int, width: int = 256, depth: int = 3, slope: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else width, width), nn.LeakyReLU(slope)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.flatten(1))).squeeze(1)


def build_discriminator(shape: tuple[int, ...], opts: DiscOptions | None = None) -> nn.Module:
    """An MLP for vectors (``len(shape) == 1``); for images (C, H, W) the image discriminator (``image_disc``)."""
    from .image_disc import ImageDiscriminator

    shape, opts = tuple(int(s) for s in shape), opts or DiscOptions()
    fields = {"width", "depth"} if len(shape) == 1 else {"channels", "levels"}
    set_here = {k for k in ("width", "depth", "channels", "levels") if getattr(opts, k) is not None}
    if set_here - fields:
        what = "vectors" if len(shape) == 1 else "images"
        raise ValueError(f"discriminator option(s) {sorted(set_here - fields)} do not apply to {what} of shape "
                         f"{shape}; use {sorted(fields)} and slope")
    kw = {k: getattr(opts, k) for k in set_here} | {"slope": opts.slope}
    if len(shape) == 1:
        return MLPDiscriminator(shape[0], **kw)
    if len(shape) == 3:
        return ImageDiscriminator(shape, **kw)
    raise ValueError(f"no discriminator for data of shape {shape}; expected (D,) vectors or (C, H, W) images")
