"""Split federated learning (SPEC section D): splittable models, per-cut profiles and fits, and
SplitFed local training (client and server parts, activations and their gradients crossing)."""

from fedtempo.split.models import (
    BLOCKS,
    check_cut,
    client_numel,
    client_part,
    cuts,
    server_part,
    split_blocks,
    splittable,
)
from fedtempo.split.profile import CutProfile, Fit, fit_curve, profile_cuts, r_squared

__all__ = [
    "BLOCKS",
    "CutProfile",
    "Fit",
    "check_cut",
    "client_numel",
    "client_part",
    "cuts",
    "fit_curve",
    "profile_cuts",
    "r_squared",
    "server_part",
    "split_blocks",
    "splittable",
]
