"""Local update procedures: epochs/iterations, batch size, SGD, proximal term; evaluation."""

from fedtempo.client.local import LocalSpec, Update, evaluate, train_local
from fedtempo.client.trainer import ClientTrainer

__all__ = ["ClientTrainer", "LocalSpec", "Update", "evaluate", "train_local"]
