"""fedtempo: federated learning on heterogeneous edge devices, with time as a first-class citizen.

The same algorithm objects (local training, aggregation rules, allocation solvers) run on a virtual
clock (``fedtempo.sim``) and, later, over a real network. Time, randomness and I/O enter at the
edges only.
"""

__version__ = "0.1.0"
