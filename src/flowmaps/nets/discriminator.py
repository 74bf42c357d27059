"""Discriminators for adversarial losses: logits (B,) for a batch of samples (B, *shape)."""

from __future__ import annotations

from torch import Tensor, nn


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


def build_discriminator(shape: tuple[int, ...], **options) -> nn.Module:
    """An MLP for vectors (``len(shape) == 1``); for images (C, H, W) the image discriminator (``image_disc``)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return MLPDiscriminator(shape[0], **options)
    if len(shape) == 3:
        try:
            from .image_disc import ImageDiscriminator
        except ImportError as err:
            raise ImportError(f"image discriminators need flowmaps.nets.image_disc ({err})") from None
        return ImageDiscriminator(shape, **options)
    raise ValueError(f"no discriminator for data of shape {shape}; expected (D,) vectors or (C, H, W) images")
