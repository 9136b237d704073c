#!/usr/bin/env bash
# One command: install what is missing, prepare the default model and the sample dataset, and start
# the studio on http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m core dataset import-samples
echo "==> ViTune Studio on http://localhost:8501"
exec .venv/bin/python scripts/serve.py --server.port "${PORT:-8501}"
