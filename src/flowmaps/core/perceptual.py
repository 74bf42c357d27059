"""LPIPS perceptual distance (VGG-16 features, learned linear heads) for lines matching's ``distance: lpips``.

``d(a, b) = Σ_l mean_{h,w} |w_l ⊙ (φ̂_l(a) − φ̂_l(b))|²`` with φ̂_l the channel-normalized VGG activations of
layer l (the ``lpips`` package, the ``images`` extra). ``lpips`` ships only its small linear heads; the VGG-16
backbone comes from a local file of torchvision's ImageNet weights (``vgg16-397923af.pth``), never downloaded
at run time. Images are (B, C, H, W) in [−1, 1]; one-channel images are repeated to RGB and images smaller
than 32×32 are upsampled bilinearly (VGG halves them four times).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

VGG_FILE = "vgg16-397923af.pth"
VGG_URL = f"https://download.pytorch.org/models/{VGG_FILE}"


def _lpips():
    try:
        import lpips
    except ImportError:
        raise ConfigError("the LPIPS distance needs the lpips package: pip install 'flowmaps[images]'") from None
    return lpips


def load_vgg_backbone(model: nn.Module, path: str | Path) -> None:
    """Copy torchvision's ``features.<i>.*`` VGG-16 weights into lpips's ``slice<k>.<i>.*`` modules."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no VGG-16 weights; download {VGG_URL} once and pass its local path "
                          "(objective.lpips_weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{path}: not a loadable weights file ({' '.join(str(err).split())[:120]})") from None
    target = model.net.state_dict()
    mapped = {}
    for key in target:
        _, idx, param = key.split(".")
        src = f"features.{idx}.{param}"
        if src not in state:
            raise ConfigError(f"{path}: not torchvision VGG-16 weights (no {src})")
        mapped[key] = state[src]
    model.net.load_state_dict(mapped)


class LPIPSDistance(nn.Module):
    """Per-sample LPIPS distance; ``weights=None`` with ``random_init=True`` uses random backbone and heads
    (wiring tests only)."""

    def __init__(self, weights: str | Path | None, net: str = "vgg", random_init: bool = False) -> None:
        super().__init__()
        if net != "vgg":
            raise ValueError(f"LPIPS backbone {net!r} is not supported; use vgg")
        if weights is None and not random_init:
            raise ConfigError(f"LPIPS needs the VGG-16 weights file: download {VGG_URL} and pass its path")
        lpips = _lpips()
        self.model = lpips.LPIPS(pretrained=not random_init, net="vgg", pnet_rand=True, verbose=False)
        if not random_init:
            load_vgg_backbone(self.model, weights)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.dim() != 4 or a.shape != b.shape:
            raise ValueError(f"LPIPS compares two image batches of equal shape (B, C, H, W), got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        if min(a.shape[-2:]) < 32:
            size = (max(32, a.shape[-2]), max(32, a.shape[-1]))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.model(a, b).reshape(len(a))


class DigitsDistance(nn.Module):
    """A perceptual distance for 8×8 digits from the shipped digits classifier (``distance: digits``):
    ``d(a, b) = Σ_l mean_{h,w} |φ̂_l(a) − φ̂_l(b)|²`` over its three convolution activations, φ̂ unit-normalized
    over channels at each pixel (LPIPS's form, without learned heads). The digits' Fréchet distance reads the
    same network's pooled last features, so this loss is not independent of that metric."""

    def __init__(self) -> None:
        super().__init__()
        from .metrics.digits import load_classifier

        self.net = load_classifier()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.dim() != 4 or a.shape != b.shape:
            raise ValueError(f"the digits distance compares two image batches of equal shape (B, C, H, W), got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        h = torch.cat([self.net.prepare(a), self.net.prepare(b)])
        total = torch.zeros(len(a), device=a.device, dtype=h.dtype)
        for layer in self.net.body:
            h = layer(h)
            if isinstance(layer, nn.SiLU):
                f = F.normalize(h, dim=1)
                total = total + (f[:len(a)] - f[len(a):]).pow(2).sum(1).mean(dim=(1, 2))
        return total
