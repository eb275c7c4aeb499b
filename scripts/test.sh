#!/usr/bin/env bash
# The test command: lint, architecture contracts, strict type check, and the whole suite (domain, both SQL engines, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && [ -x .venv/bin/mypy ] || bash scripts/install.sh   # a venv from before mypy joined the test extra gets it
bash scripts/ensure-postgres.sh
.venv/bin/ruff check operator tests benchmarks scripts
.venv/bin/lint-imports pyproject.toml
.venv/bin/mypy                                   # strict, over the package ([tool.mypy] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
