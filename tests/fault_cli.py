"""``python tests/fault_cli.py ARGS``: the ``flowmaps`` command line with two test-only objectives registered.

- ``nan_fm``: flow matching whose loss (``nan_at``) or gradient alone (``nan_grad_at``) is made non-finite
  at the given 1-based steps, to drive the non-finite guard exactly, and whose loss is multiplied by ``scale``;
- ``critic_fm``: flow matching weighted by a small critic, an auxiliary network the trainer steps with its own
  Adam (as an adversarial objective's discriminator), so a resume is exact only if the objective's
  ``state_dict``, the critic's optimizer and the RNG it draws from are all restored. With
  ``FAULT_KILL_AT_STEP=K`` in the environment, the process sends itself SIGKILL inside step K + 1, once steps
  1 … K are done and logged: a kill at an exact point, with no race against a fast training loop.

With ``FAULT_SLOW_WRITE=SECONDS`` in the environment, every shard file's temporary file stays unrenamed that
long, so a test can kill ``flowmaps pairs`` inside the atomic write.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch
from torch import nn

from flowmaps.core.objectives import Auxiliary, register
from flowmaps.core.objectives.fm import FM


class NanFM(FM):
    class Config(FM.Config):
        nan_at: list[int] = []
        nan_grad_at: list[int] = []
        scale: float = 1.0

    def loss(self, model, batch, step):
        out = super().loss(model, batch, step)
        out.value = self.opts.scale * out.value
        if step + 1 in self.opts.nan_at:
            out.value = out.value * float("nan")
        if step + 1 in self.opts.nan_grad_at:  # value + 0, gradient 0 · d sqrt(|0|) = NaN
            w = next(model.parameters())
            out.value = out.value + 0.0 * (w - w.detach()).abs().sqrt().sum()
        return out


class CriticFM(FM):
    def __init__(self, opts, ctx):
        super().__init__(opts, ctx)
        self.critic = nn.Linear(ctx.shape[0], 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def auxiliaries(self):
        return {"critic": Auxiliary(self.critic, lambda p: torch.optim.Adam(p, lr=1e-2))}

    def loss(self, model, batch, step):
        if step == int(os.environ.get("FAULT_KILL_AT_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)
        out = super().loss(model, batch, step)
        x1 = batch["x1"]
        c = self.critic(x1 + 0.1 * torch.randn_like(x1)).pow(2).mean()
        self.calls += 1
        weight = 1 + torch.sigmoid(self.critic(x1).mean()).detach()
        out.value, out.logs["critic"], out.aux["critic"] = weight * out.value, float(c), c
        return out


for name, cls in {"nan_fm": NanFM, "critic_fm": CriticFM}.items():
    register(name, cls)

if os.environ.get("FAULT_SLOW_WRITE"):
    import flowmaps.io.shards as shards

    _save = shards.save_array_file

    def _slow_save(path, rows):
        _save(path, rows)
        time.sleep(float(os.environ["FAULT_SLOW_WRITE"]))

    shards.save_array_file = _slow_save

if __name__ == "__main__":
    from flowmaps.app.cli import main

    sys.exit(main())
