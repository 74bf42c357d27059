"""``python tests/ddp_worker.py CONFIG RUN OUT [key=value …]``: one rank of a multi-process CPU (gloo) training run.

Started by ``tests/test_distributed.py`` with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; after
training, each rank writes its own final weights to ``OUT/rank{RANK}.safetensors`` so the test can compare them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

import flowmaps.train as training
from flowmaps.config import load_config

_loop = training._loop


def _loop_then_save(cfg, run_dir, model, *args):
    _loop(cfg, run_dir, model, *args)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(sys.argv[3]) / f"rank{os.environ['RANK']}.safetensors"))


training._loop = _loop_then_save

if __name__ == "__main__":
    training.train(load_config(sys.argv[1], sys.argv[4:]), sys.argv[2], progress=False)
