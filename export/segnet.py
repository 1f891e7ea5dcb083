"""The segmenter network: a small U-Net on the EfficientNet-Lite0 trunk, its ONNX wrapper, and
reading its weights back from an exported ONNX file (for fine-tuning a shipped model).

Encoder: Lite0 (ImageNet weights) cut after stride 16 (the stride-32 stages cost time and add little
for item/background/boundary). Decoder: three upsampling steps with skip connections from strides
8, 4 and 2, depthwise-separable convolutions, a 3-class head at stride 2 upsampled bilinearly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from export import backbone
from export.onnx_utils import InGraphPreprocess

CLASS_NAMES = ("background", "item", "boundary")
NAME = "checkout-segmenter"
DEFAULT_SIZE = (192, 256)  # (H, W): 4:3 like most cameras


def _ds(cin: int, cout: int) -> nn.Sequential:
    """Depthwise-separable 3x3 conv + BN + ReLU (cheap at the high-resolution levels)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegNet(nn.Module):
    """float RGB NCHW normalised like the backbone -> logits [N, 3, H, W]."""

    def __init__(self, pretrained: bool = True, widths: tuple[int, int, int, int] = (64, 48, 32, 24)) -> None:
        super().__init__()
        trunk = backbone.build_lite0(pretrained)
        ends = trunk.feature_ends[:4]  # strides 2, 4, 8, 16
        self.stem = nn.Sequential(trunk._conv_stem, trunk._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList(trunk._blocks[: ends[-1] + 1])
        self.ends = tuple(ends)
        c2, c4, c8, c16 = backbone.FEATURE_CHANNELS[:4]
        w16, w8, w4, w2 = widths
        self.lat16 = nn.Sequential(nn.Conv2d(c16, w16, 1, bias=False), nn.BatchNorm2d(w16), nn.ReLU(inplace=True))
        self.dec8 = _ds(w16 + c8, w8)
        self.dec4 = _ds(w8 + c4, w4)
        self.dec2 = _ds(w4 + c2, w2)
        self.head = nn.Conv2d(w2, len(CLASS_NAMES), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i in self.ends:
                feats.append(y)
        f2, f4, f8, f16 = feats
        y = self.lat16(f16)
        for dec, skip in ((self.dec8, f8), (self.dec4, f4), (self.dec2, f2)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = dec(torch.cat([y, skip], 1))
        return F.interpolate(self.head(y), size=size, mode="bilinear", align_corners=False)


def to_input(images_bgr: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] BGR -> the network's float input (what InGraphPreprocess does in the graph)."""
    x = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).permute(0, 3, 1, 2).float()
    return backbone.normalise(x)


class _ClassesAndConfidence(nn.Module):
    """logits -> (classes uint8 [N, H, W], confidence float32 [N, H, W]): argmax in the graph, so
    only a byte per pixel leaves the device."""

    def __init__(self, net: SegNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf, cls = torch.softmax(self.net(x), dim=1).max(dim=1)
        return cls.to(torch.uint8), conf


def export_wrapper(net: SegNet) -> nn.Module:
    """uint8 [N, H, W, 3] BGR -> (classes, confidence), the ONNX contract."""
    return InGraphPreprocess(_ClassesAndConfidence(net), backbone.MEAN, backbone.STD).eval()


def _conv_bn_pairs(net: SegNet) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every conv in forward order, with the BatchNorm registered right after it (if any)."""
    mods = list(net.modules())
    bn_of = {
        id(m): mods[i + 1]
        for i, m in enumerate(mods[:-1])
        if isinstance(m, nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d)
    }
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, *_: order.append(m)) for m in mods if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    return [(c, bn_of.get(id(c))) for c in order]  # type: ignore[misc]


def load_onnx_weights(net: SegNet, onnx_path: Path) -> SegNet:
    """Load weights back from an exported segmenter so a shipped model can be fine-tuned.

    The exporter folds each BatchNorm into its conv; the folded (W, b) go into the conv and its BN
    becomes an identity plus bias (weight 1, mean 0, var 1 - eps). Fine-tune with BN layers in eval
    mode (``freeze_bn``) so the model starts exactly where the ONNX file is. Int8 QDQ weights are
    dequantised."""
    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def value(name: str) -> np.ndarray:
        if name in inits:
            return inits[name]
        node = producers.get(name)
        if node is not None and node.op_type == "Identity":  # the exporter's stand-in for a repeated initializer
            return value(node.input[0])
        if node is not None and node.op_type == "DequantizeLinear":
            x, scale = value(node.input[0]), value(node.input[1])
            zero = value(node.input[2]) if len(node.input) > 2 else np.zeros_like(scale)
            shape = [-1 if i == 0 else 1 for i in range(x.ndim)] if scale.ndim else []
            return (x - zero.reshape(shape)) * scale.reshape(shape)
        raise ValueError(f"{onnx_path}: cannot find the value of tensor {name!r}")

    convs = [n for n in graph.node if n.op_type == "Conv"]
    pairs = _conv_bn_pairs(net)
    if len(convs) != len(pairs):
        raise ValueError(
            f"{onnx_path}: expected {len(pairs)} convolutions of a checkout segmenter, found "
            f"{len(convs)}: not exported by export/segmenter.py with the same widths?"
        )
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs, strict=True):
            w = value(node.input[1])
            b = value(node.input[2]) if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{onnx_path}: conv {node.name} has weights {w.shape}, expected {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.from_numpy(w))
            if bn is None:
                assert conv.bias is not None
                conv.bias.copy_(torch.from_numpy(b))
                continue
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(b))
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return net


def freeze_bn(net: nn.Module) -> None:
    """Put every BatchNorm in eval mode (use its running statistics) while the rest trains."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
