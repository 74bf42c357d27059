#!/usr/bin/env bash
# The test suite: set up (first time only), then the linter (ruff), the import-layer contracts (import-linter)
# and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
