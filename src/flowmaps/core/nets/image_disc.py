"""A convolutional discriminator for images (C, H, W): logits (B,)."""

from __future__ import annotations

from torch import Tensor, nn


class ImageDiscriminator(nn.Module):
    """``logit = w · sum_{pixels} h_L``: a 3×3 conv, then ``levels`` blocks of (3×3 conv, LeakyReLU, stride-2
    4×4 conv, LeakyReLU), doubling the width up to ``channels · 2^(levels-1)``; ``levels`` defaults to as many
    halvings as leave at least 4×4 pixels."""

    def __init__(self, shape: tuple[int, ...], channels: int = 32, levels: int | None = None,
                 slope: float = 0.2) -> None:
        super().__init__()
        cin, h, w = (int(s) for s in shape)
        if levels is None:
            levels = 0
            while min(h, w) >> (levels + 1) >= 4:
                levels += 1
            levels = max(levels, 1)
        layers: list[nn.Module] = [nn.Conv2d(cin, channels, 3, padding=1), nn.LeakyReLU(slope)]
        ch = channels
        for i in range(levels):
            out = channels * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(slope),
                       nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(slope)]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).sum(dim=(2, 3))).squeeze(1)
