"""flowmaps: few-step generative models (flow map matching, lines matching models) on PyTorch.

Convention everywhere: t = 0 is noise, t = 1 is data, and every model is a flow map
``X_{s,t}(x) = x + (t - s) v(x, s, t)``.

The Python API (the command line's own code paths)::

    import flowmaps
    cfg = flowmaps.config("configs/checker_fm.yaml", "train.steps=2000")   # or a dict of sections
    run = flowmaps.train(cfg, "runs/fm")                                   # or flowmaps.load("runs/fm")
    x = flowmaps.sample(run, n=10_000, steps=2)                            # a tensor (n, *data shape)
    rows = flowmaps.evaluate(run, steps=[1, 2, 4])                         # metrics per solver and steps

Names are imported on first use, so ``import flowmaps`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # the API
    "config": "flowmaps.app.api", "model": "flowmaps.app.api", "train": "flowmaps.app.api",
    "load": "flowmaps.app.api", "sample": "flowmaps.app.api", "evaluate": "flowmaps.app.api",
    # what it returns and takes
    "Run": "flowmaps.run.build", "RunConfig": "flowmaps.run.config", "FlowMap": "flowmaps.core.models",
    "GaussianMixture": "flowmaps.core.teachers",
    # a training loop of one's own, and methods defined outside the package
    "TrainState": "flowmaps.run.trainer", "build_state": "flowmaps.run.trainer", "train_step": "flowmaps.run.trainer",
    "Objective": "flowmaps.core.objectives", "Loss": "flowmaps.core.objectives", "register": "flowmaps.core.objectives",
    # errors
    "FlowmapsError": "flowmaps.errors", "ConfigError": "flowmaps.errors", "DataError": "flowmaps.errors",
    "CheckpointError": "flowmaps.errors", "StoreError": "flowmaps.errors", "NonFiniteError": "flowmaps.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flowmaps' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
