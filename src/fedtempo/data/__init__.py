"""Data: loaders (MNIST/Fashion IDX, sklearn digits, LEAF Synthetic), partitioners, views."""

from fedtempo.data.datasets import ArrayDataset, DataBundle, load_digits, load_idx_pair
from fedtempo.data.partition import dirichlet, iid, power_law, shards, split_clients
from fedtempo.data.synthetic import leaf_synthetic

__all__ = [
    "ArrayDataset",
    "DataBundle",
    "dirichlet",
    "iid",
    "leaf_synthetic",
    "load_digits",
    "load_idx_pair",
    "power_law",
    "shards",
    "split_clients",
]
