"""``python tests/fault_cli.py ARGS``: the ``flowmaps`` command line with two test-only objectives registered.

- ``nan_fm``: flow matching whose loss (``nan_at``) or gradient alone (``nan_grad_at``) is made non-finite
  at the given 1-based steps, to drive the non-finite guard exactly, and whose loss is multiplied by ``scale``;
- ``critic_fm``: flow matching weighted by a small critic that trains itself with its own Adam inside
  ``loss`` (as an adversarial objective does), so a resume is exact only if the objective's ``state_dict``
  and ``train_state`` (the critic optimizer) and the RNG it draws from are all restored. With
  ``FAULT_KILL_AT_STEP=K`` in the environment, the process sends itself SIGKILL inside step K + 1, once steps
  1 … K are done and logged: a kill at an exact point, with no race against a fast training loop.

With ``FAULT_SLOW_WRITE=SECONDS`` in the environment, every pair shard's temporary file stays unrenamed that
long, so a test can kill ``flowmaps pairs`` inside the atomic write.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch
from torch import nn

import flowmaps.objectives as objectives
from flowmaps.objectives.fm import FM


class NanFM(FM):
    class Config(FM.Config):
        nan_at: list[int] = []
        nan_grad_at: list[int] = []
        scale: float = 1.0

    def loss(self, model, batch, step):
        loss, logs = super().loss(model, batch, step)
        loss = self.opts.scale * loss
        if step + 1 in self.opts.nan_at:
            loss = loss * float("nan")
        if step + 1 in self.opts.nan_grad_at:  # value + 0, gradient 0 · d sqrt(|0|) = NaN
            w = next(model.parameters())
            loss = loss + 0.0 * (w - w.detach()).abs().sqrt().sum()
        return loss, logs


class CriticFM(FM):
    def __init__(self, opts, ctx):
        super().__init__(opts, ctx)
        self.critic = nn.Linear(ctx.source.shape[0], 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=1e-2)

    def loss(self, model, batch, step):
        if step == int(os.environ.get("FAULT_KILL_AT_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)
        loss, logs = super().loss(model, batch, step)
        x1 = batch["x1"]
        c = self.critic(x1 + 0.1 * torch.randn_like(x1)).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        c.backward()
        self.critic_opt.step()
        self.calls += 1
        weight = 1 + torch.sigmoid(self.critic(x1).mean()).detach()
        return weight * loss, {"critic": float(c)}

    def train_state(self):
        return {"critic_opt": self.critic_opt.state_dict()}

    def load_train_state(self, state):
        self.critic_opt.load_state_dict(state["critic_opt"])


METHODS = {"nan_fm": NanFM, "critic_fm": CriticFM}
_registry = objectives.registry
objectives.registry = lambda: {**_registry(), **METHODS}

if os.environ.get("FAULT_SLOW_WRITE"):
    import flowmaps.pairs as pairs

    _save = pairs._save

    def _slow_save(path, rows):
        _save(path, rows)
        time.sleep(float(os.environ["FAULT_SLOW_WRITE"]))

    pairs._save = _slow_save

if __name__ == "__main__":
    from flowmaps.cli import main

    sys.exit(main())
