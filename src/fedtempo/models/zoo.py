"""The model zoo: each builder takes the input shape (without batch) and the number of classes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedtempo.errors import ConfigError
from fedtempo.models.effnet import effnetv2_tiny

Builder = Callable[[tuple[int, ...], int], nn.Module]


def _flat_dim(input_shape: tuple[int, ...]) -> int:
    dim = 1
    for s in input_shape:
        dim *= s
    return dim


def _require_28x28(name: str, input_shape: tuple[int, ...]) -> None:
    if tuple(input_shape) != (1, 28, 28):
        raise ConfigError(
            f"model.name: {name!r} needs 1x28x28 inputs (MNIST, Fashion-MNIST), "
            f"the data set gives {'x'.join(map(str, input_shape))}"
        )


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: Flatten, Linear(d, C)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The 2NN of McMahan et al. (2017): two hidden layers of 200 ReLU units."""
    d = _flat_dim(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def cnn_s(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """cnn-s of BENCHMARKS.md (20,522 parameters for 10 classes)."""
    _require_28x28("cnn-s", input_shape)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def femnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The LEAF FEMNIST CNN (Caldas et al. 2018): two 5x5 conv + pool stages, FC 2048."""
    _require_28x28("femnist-cnn", input_shape)
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 2048),
        nn.ReLU(),
        nn.Linear(2048, num_classes),
    )


class CharLSTM(nn.Module):
    """The LEAF Shakespeare model: embedding 8, two LSTM layers of 256, next-character logits.

    Input: int64 token ids (batch x sequence length); output: logits for the next character.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        logits: torch.Tensor = self.head(out[:, -1, :])
        return logits


def char_lstm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Character LSTM; ``input_shape`` is (sequence length,), ``num_classes`` the vocabulary."""
    if len(input_shape) != 1:
        raise ConfigError(f"model.name: 'char-lstm' needs token sequences, got shape {input_shape}")
    return CharLSTM(num_classes)


MODELS: dict[str, Builder] = {
    "logreg": logreg,
    "mlp": mlp,
    "cnn-s": cnn_s,
    "femnist-cnn": femnist_cnn,
    "char-lstm": char_lstm,
    "effnetv2-tiny": effnetv2_tiny,
}
