#!/usr/bin/env bash
# Create .venv and install everything CFSR-Delta needs; safe to run again (a no-op when nothing changed).
#   torch 2.14.1 + torchvision 0.29.1, basicsr 1.4.2 from PyPI (unmodified), this package (pip install -e .)
#   with its test/demo/onnx/openvino/figure/spandrel extras; then links the upstream weights when ../shared has them.
# Usage: bash scripts/setup_env.sh            (env: PYTHON=python3.11, VENV=.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.cfsrdelta-setup"
want="$(cat setup.py scripts/setup_env.sh | sha256sum | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1"
  pip install torch==2.14.1 torchvision==0.29.1
  # basicsr's setup.py imports torch, so it is built against the venv's torch (no build isolation).
  echo "[setup] installing basicsr 1.4.2 (unmodified) and cfsrdelta_arch"
  pip install setuptools wheel
  pip install --no-build-isolation basicsr==1.4.2
  pip install --no-build-isolation -e ".[test,demo,onnx,openvino,figures,spandrel]"
  echo "$want" > "$STAMP"
else
  echo "[setup] $VENV is up to date"
fi

# Upstream weights: link a local copy (offline machines, CI) when one sits beside the checkout.
if [ -d ../shared/weights/official ]; then
  "$VENV/bin/python" scripts/fetch_weights.py --from ../shared/weights/official --quiet
fi
