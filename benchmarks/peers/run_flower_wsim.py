"""Run the W-sim Flower app (flower_wsim.py) in Flower's simulation engine; see that module.

    .venv/bin/python run_flower_wsim.py MNIST_DIR PARTITION_NPZ ROUNDS CLIENTS_PER_ROUND OUT_JSON

Prints the app's {"accuracy": ...}. Telemetry, Ray's usage statistics and Flower's update check
are off; nothing is installed at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    root, parts, rounds, per_round, out = sys.argv[1:6]
    os.environ |= {
        "WSIM_MNIST": root,
        "WSIM_PARTITION": parts,
        "WSIM_ROUNDS": rounds,
        "WSIM_PER_ROUND": per_round,
        "WSIM_OUT": out,
        "PYTHONPATH": str(HERE),  # Ray's workers import the app module by name
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    sys.path.insert(0, str(HERE))
    from flower_wsim import CLIENTS, client_app, server_app
    from flwr.simulation import run_simulation

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=CLIENTS,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False},
        },
    )
    print(Path(out).read_text())
