"""Train the digits classifier behind the digits' Fréchet distance (:mod:`flowmaps.core.metrics.digits`).

    python -m flowmaps.app.digits_classifier --out src/flowmaps/core/metrics/digits_classifier.safetensors

trains on the digits' training split (the same seeded split as ``data.kind: images, name: digits``, held-out
fraction 0.2, seed 0) and prints the held-out accuracy. Training augments with one-pixel shifts and, for half
the batches, the round trip of an upsampled digit (bilinear to 16 or 32 pixels, area-averaged back), so
upsampled digits read back correctly.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.metrics.digits import WEIGHTS, DigitsClassifier

HELDOUT, SPLIT_SEED = 0.2, 0


def digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_heldout, y_heldout) at 8×8, the split of the digits data source."""
    from ..data.images import load_digits, split

    x, y = load_digits()
    tr, ho = split(len(x), HELDOUT, SPLIT_SEED)
    return x[tr], y[tr], x[ho], y[ho]


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((net(x).argmax(1) == y).float().mean())


def shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random translations by up to one pixel (zero padding, −1 = background)."""
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2,), generator=g).tolist()
    return pad[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def resample(x: Tensor, g: torch.Generator) -> Tensor:
    """With probability 1/2, the round trip of an upsampled digit: bilinear to 16 or 32 pixels and back to 8."""
    from ..data.images import resize

    if torch.rand((), generator=g) < 0.5:
        return x
    size = 16 if torch.rand((), generator=g) < 0.5 else 32
    return F.adaptive_avg_pool2d(resize(x, size), 8)


def train_classifier(steps: int = 3000, batch: int = 128, lr: float = 2e-3,
                     seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Adam on cross-entropy with one-pixel shifts and upsampling round trips; returns the net and its held-out
    accuracy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y, xh, yh = digits_split()
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = F.cross_entropy(net(resample(shift(x[idx], g), g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net, accuracy(net, xh, yh)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the digits classifier used for the digits' Fréchet distance.")
    p.add_argument("--out", default=str(WEIGHTS), help="weights file (.safetensors)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from safetensors.torch import save_file

    from ..io.files import atomic_write

    start = time.time()
    net, acc = train_classifier(args.steps, seed=args.seed)
    atomic_write(args.out, lambda tmp: save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp))
    print(f"held-out accuracy {acc:.4f} ({len(digits_split()[3])} images), {time.time() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
