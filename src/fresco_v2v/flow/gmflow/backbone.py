"""GMFlow's feature extractor (Xu et al., CVPR 2022, §3.1): a residual CNN from the image to 1/8 resolution.

Layer names match the public checkpoint (``backbone.*``). Instance normalization without learned parameters, so the
norms hold no weights; the 3x3 convolutions of the residual blocks have no bias.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and ReLU; a strided 1x1 projection when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.norm3 = nn.InstanceNorm2d(planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class CNNEncoder(nn.Module):
    """[B, 3, H, W] normalized image -> [B, C, H/8, W/8] features (one output scale, as the Sintel model)."""

    def __init__(self, output_dim: int = 128, widths: tuple[int, int, int] = (64, 96, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)  # 1/2
        self.norm1 = nn.InstanceNorm2d(widths[0])
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(ResidualBlock(widths[0], widths[0]), ResidualBlock(widths[0], widths[0]))  # 1/2
        self.layer2 = nn.Sequential(ResidualBlock(widths[0], widths[1], 2), ResidualBlock(widths[1], widths[1]))  # 1/4
        self.layer3 = nn.Sequential(ResidualBlock(widths[1], widths[2], 2), ResidualBlock(widths[2], widths[2]))  # 1/8
        self.conv2 = nn.Conv2d(widths[2], output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))
