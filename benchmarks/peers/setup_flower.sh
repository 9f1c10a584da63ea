#!/usr/bin/env bash
# Flower, for the W-sim side-by-side run (benchmarks/w_sim.py --peer flower), in its own virtual
# environment here (benchmarks/peers/.venv, ignored by git): flwr with its Ray simulation
# engine from the package registry, the same CPU torch as fedtempo. Safe to rerun.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "flwr[simulation]==1.42.0" "torch==2.13.0" numpy
"$venv/bin/python" -c "import flwr, ray, torch; print('flower', flwr.__version__, 'ray', ray.__version__)"
