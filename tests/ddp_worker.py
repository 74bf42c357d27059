"""``python tests/ddp_worker.py CONFIG RUN OUT [key=value …]``: one rank of a multi-process CPU (gloo) training run.

Started by ``tests/test_distributed.py`` with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; after
training, each rank writes its own final weights to ``OUT/rank{RANK}.safetensors`` so the test can compare them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

import flowmaps.run.trainer as training
from flowmaps.core import distributed
from flowmaps.run.config import load_config

_fit = training.fit


def _fit_then_save(state, *args):
    _fit(state, *args)
    weights = {k: v.detach().contiguous() for k, v in state.model.state_dict().items()}
    save_file(weights, str(Path(sys.argv[3]) / f"rank{os.environ['RANK']}.safetensors"))


training.fit = _fit_then_save

if __name__ == "__main__":
    done = False
    try:
        training.train(load_config(sys.argv[1], sys.argv[4:]), sys.argv[2], progress=False)
        done = True
    finally:
        distributed.close(wait=done)  # as the CLI does: a group left to the interpreter's teardown can abort
