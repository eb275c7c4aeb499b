#!/usr/bin/env bash
# The test command: lint, architecture contracts, and the whole suite (domain, both SQL engines, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
bash scripts/ensure-postgres.sh
.venv/bin/ruff check operator tests benchmarks scripts
.venv/bin/lint-imports pyproject.toml
.venv/bin/python -m pytest -q "$@"
