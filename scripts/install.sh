#!/usr/bin/env bash
# One command sets up everything: a virtual environment, the package with its test tools, and helm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python scripts/install-helm.py
echo "installed: .venv (tfgrid-operator + test tools) and bin/helm"
