#!/usr/bin/env bash
# One command sets up everything: a virtual environment, the package with its test tools (the test extra
# includes the sandbox extra: the emulator the e2e tests run against), and helm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python scripts/install-helm.py
echo "installed: .venv (tfgrid-operator + test tools) and bin/helm"
