"""GMFlow (Xu et al., "GMFlow: Learning Optical Flow via Global Matching", CVPR 2022), the flow of the FRESCO paper
(§4), written here layer by layer with the parameter names of the public ``gmflow_sintel-0c07dcb3.pth``.

The configuration FRESCO and Rerender-A-Video use: 128 feature channels, one scale at 1/8, one attention head,
six transformer blocks in 2x2 (shifted) windows with FFN expansion 4, global matching, global flow propagation,
convex upsampling x8: 123 tensors, 4,680,288 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import CNNEncoder
from .matching import FlowPropagation, convex_upsample, global_matching
from .transformer import FeatureTransformer, add_window_position

#: ImageNet statistics the backbone was trained with (inputs in 0..255 are divided by 255 first).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class GMFlow(nn.Module):
    def __init__(
        self,
        feature_channels: int = 128,
        upsample_factor: int = 8,
        num_transformer_layers: int = 6,
        ffn_dim_expansion: int = 4,
    ):
        super().__init__()
        self.feature_channels = feature_channels
        self.upsample_factor = upsample_factor
        self.backbone = CNNEncoder(output_dim=feature_channels)
        self.transformer = FeatureTransformer(num_transformer_layers, feature_channels, ffn_dim_expansion)
        self.feature_flow_attn = FlowPropagation(feature_channels)
        self.upsampler = nn.Sequential(
            nn.Conv2d(2 + feature_channels, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, upsample_factor**2 * 9, 1),
        )

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGE_MEAN, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGE_STD, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        return (image / 255.0 - mean) / std

    def forward(
        self, image0: torch.Tensor, image1: torch.Tensor, attn_splits: int = 2, bidirectional: bool = False
    ) -> torch.Tensor:
        """image0, image1: [B, 3, H, W] RGB in 0..255, H and W multiples of 8 * attn_splits.

        Returns the flow image0 -> image1 [B, 2, H, W], or [2B, 2, H, W] (0 -> 1, then 1 -> 0) when
        ``bidirectional``: both directions from one pass, as FRESCO calls it.
        """
        b = image0.shape[0]
        features = self.backbone(self.normalize(torch.cat([image0, image1])))  # [2B, C, H/8, W/8]
        f0, f1 = add_window_position(features[:b], attn_splits), add_window_position(features[b:], attn_splits)
        f0, f1 = self.transformer(f0, f1, attn_splits)
        flow = global_matching(f0, f1, bidirectional)  # [B or 2B, 2, h, w]
        feature = torch.cat([f0, f1]) if bidirectional else f0  # each flow propagates over its source frame
        flow = self.feature_flow_attn(feature, flow)
        mask = self.upsampler(torch.cat([flow, feature], dim=1))
        return convex_upsample(flow, mask, self.upsample_factor)
