#!/usr/bin/env bash
# Install what is needed, then run the test suite (offline, a few minutes on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest -n 2 "$@"
