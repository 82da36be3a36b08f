"""A Siamese network: one embedding network, shared by both images of a pair, compared by distance.

The backbone is a zoo model's feature extractor (MobileNet v2 by default; its ``features`` keep torchvision's
names under ``backbone.``), then global average pooling and a Linear projection to ``embed_dim``, L2-normalised
so that the distance of two embeddings is in [0, 2] and their dot product is their cosine. The exported file
is the embedding network (one image in, one embedding out): the app embeds each image once and compares
embeddings itself, which is how a face or product matcher runs on a phone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIAMESE_BACKBONES = ("mobilenet_v2", "mobilenet_v1", "efficientnet_b0", "efficientnet_lite0", "resnet18")


def _feature_extractor(backbone: str, width: float) -> tuple[nn.Module, int]:
    """(module mapping an image to a feature map, its channels) of a zoo classifier, classifier removed."""
    if backbone.startswith("resnet"):
        from .resnet import resnet

        net = resnet(backbone)
        body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                             net.layer4)
        return body, net.fc.in_features
    if backbone.startswith("mobilenet"):
        from .mobilenet import MobileNetV1, MobileNetV2

        net = (MobileNetV2 if backbone == "mobilenet_v2" else MobileNetV1)(width)
    else:
        from .efficientnet import efficientnet

        net = efficientnet(backbone)
    linear = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)][-1]
    return net.features, linear.in_features


class SiameseNet(nn.Module):
    def __init__(self, backbone: str = "mobilenet_v2", embed_dim: int = 128, width: float = 1.0):
        super().__init__()
        if backbone not in SIAMESE_BACKBONES:
            raise ValueError(f"unknown Siamese backbone {backbone!r}: choose one of {', '.join(SIAMESE_BACKBONES)}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.backbone_name = backbone
        self.backbone, channels = _feature_extractor(backbone, width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.embedding = nn.Linear(channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embedding of each image, [N, embed_dim]."""
        embedding = self.embedding(torch.flatten(self.avgpool(self.backbone(x)), 1))
        # F.normalize's norm converts to TFLite as ABS and POW, which have no int8 kernels (the int8 file would
        # fall back to float); x * rsqrt(sum x^2) is the same value (eps as F.normalize's 1e-12, squared) from
        # MUL, SUM and RSQRT, which have
        return embedding * torch.rsqrt(torch.sum(embedding * embedding, dim=1, keepdim=True).clamp_min(1e-24))

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of two batches of embeddings: 0 same, sqrt(2) orthogonal, 2 opposite."""
        return torch.linalg.vector_norm(a - b, dim=1)

    def compare(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Distance between the embeddings of two batches of images, pair by pair (both through one network)."""
        return self.distance(self(x1), self(x2))

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        return [(f"{self.backbone_name} features", [self.backbone]),
                ("pool + embedding fc + L2 norm", [self.avgpool, self.embedding])]


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Hadsell et al. 2006: pull pairs of one identity together, push others beyond ``margin``."""
    same = same.to(distance.dtype)
    return torch.mean(same * distance ** 2 + (1 - same) * F.relu(margin - distance) ** 2)
