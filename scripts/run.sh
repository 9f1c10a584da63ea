#!/usr/bin/env bash
# Install what is needed, then run an experiment: no argument runs the embedded default
# (scikit-learn digits, offline). Extra arguments go to `fedtempo run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/fedtempo" run "$@"
