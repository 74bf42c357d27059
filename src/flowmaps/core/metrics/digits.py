"""A small CNN classifier of the 8×8 digits: the feature extractor of the digits' Fréchet distance.

Shipped as ``digits_classifier.safetensors`` beside this module, trained by :mod:`flowmaps.app.digits_classifier`
on the digits' training split. Features are the 64-d global-average-pooled last convolution (before the linear
head). Inputs are (B, 1, H, W) in [−1, 1]; larger digits (16×16, 32×32) are area-averaged to 8×8, 3-channel
images averaged over channels.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")


class DigitsClassifier(nn.Module):
    """conv(1→16) → conv(16→32) → avg-pool 2 → conv(32→64) → global mean = features (64) → linear (10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(),
                                  nn.AvgPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.SiLU())
        self.head = nn.Linear(64, 10)

    @staticmethod
    def prepare(x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"the digits classifier takes images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        x = x.mean(1, keepdim=True) if x.shape[1] == 3 else x
        return F.adaptive_avg_pool2d(x, 8) if tuple(x.shape[-2:]) != (8, 8) else x

    def features(self, x: Tensor) -> Tensor:
        return self.body(self.prepare(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def load_classifier(path: str | Path = WEIGHTS) -> DigitsClassifier:
    """The shipped (or given) weights, in eval mode, frozen."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no digits-classifier weights; train them with "
                                f"`python -m flowmaps.app.digits_classifier --out {path}`")
    net = DigitsClassifier()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)
