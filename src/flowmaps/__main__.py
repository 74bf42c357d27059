"""``python -m flowmaps …`` is the ``flowmaps`` command (e.g. under ``torchrun -m flowmaps train …``)."""

import sys

from .app.cli import main

sys.exit(main())
