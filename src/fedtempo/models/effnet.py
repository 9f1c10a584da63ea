"""A small EfficientNetV2-style network for 28x28 inputs, written as named blocks so that it
can be split (``fedtempo.split``)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fedtempo.errors import ConfigError

# Fused-MBConv stages, then MBConv stages with squeeze-and-excitation, SiLU activations
# (Tan & Le 2021). GroupNorm instead of BatchNorm: no running statistics, so the whole state is
# in the parameters and FedAvg of parameters is FedAvg of the model.


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class FusedMBConv(nn.Module):
    """3x3 conv expanding to ``expand`` x channels (stride s), then a 1x1 projection; residual
    when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        layers: list[nn.Module] = [nn.Conv2d(c_in, mid, 3, stride, 1, bias=False), _norm(mid)]
        layers.append(nn.SiLU())
        if expand != 1:
            layers += [nn.Conv2d(mid, c_out, 1, bias=False), _norm(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        result: torch.Tensor = x + out if self.residual else out
        return result


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))


class MBConv(nn.Module):
    """1x1 expansion, 3x3 depthwise conv (stride s), squeeze-and-excitation, 1x1 projection;
    residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            _norm(mid),
            nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            _norm(mid),
            nn.SiLU(),
            SqueezeExcite(mid, max(1, c_in // 4)),
            nn.Conv2d(mid, c_out, 1, bias=False),
            _norm(c_out),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return x + out if self.residual else out


def effnetv2_tiny(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """EfficientNetV2-style network for 1x28x28 inputs, as 7 blocks (7 cut points):
    stem 3x3 conv (16) | Fused-MBConv 16->16 | Fused-MBConv x4 16->32 /2 | MBConv x4 32->48 /2 |
    MBConv x4 48->48 | 1x1 head conv 128 | pool + linear."""
    if tuple(input_shape) != (1, 28, 28):
        raise ConfigError(
            "model.name: 'effnetv2-tiny' needs 1x28x28 inputs, the data set gives "
            + "x".join(map(str, input_shape))
        )
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), _norm(16), nn.SiLU()),
        fmb1=nn.Sequential(FusedMBConv(16, 16, 1, 1)),
        fmb2=nn.Sequential(FusedMBConv(16, 32, 4, 2)),
        mb1=nn.Sequential(MBConv(32, 48, 4, 2)),
        mb2=nn.Sequential(MBConv(48, 48, 4, 1)),
        head=nn.Sequential(nn.Conv2d(48, 128, 1, bias=False), _norm(128), nn.SiLU()),
        classifier=nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes)
        ),
    )
    return nn.Sequential(blocks)
