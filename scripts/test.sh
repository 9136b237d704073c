#!/usr/bin/env bash
# One command: install the test needs (Debian's chromium included) and run the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k datasets` or `-m "slow or extended"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt 2>&1 | grep -v "^WARNING: Location" || true
# the cluster set (Ray) for the two-node test; pip's check is quick when it is installed already
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-cluster.txt 2>&1 | grep -v "^WARNING: Location" || true
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser test"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
