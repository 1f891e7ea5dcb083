"""Frozen and fine-tuned features combined in one embedder graph.

``CombinedNet`` runs one EfficientNet-Lite input through two trunks that share the frozen early blocks:

    shared stem + blocks 0..k (ImageNet weights, frozen in fine-tuning: computed once)
      -> fine-tuned blocks k+1.. + head + projection -> a (L2-normalised, D_ft)
      -> ImageNet blocks k+1.. + head + pool            -> b (L2-normalised, 1280)
    out = normalise([sqrt(1 - w) * a, sqrt(w) * b])

so the cosine of two outputs is ``(1 - w) * cos(a) + w * cos(b)``: ``w`` is the weight of the general
ImageNet features against the grocery-tuned ones. Output dim D_ft + 1280.

``finetuned_from_onnx`` rebuilds a shipped fine-tuned embedder in torch from its ONNX file (the
exporter folds BatchNorm into the convolutions; the rebuilt BN layers are identities plus the folded
bias), so a shipped model can be combined without its training checkpoint.

    python -m export.combined --finetuned stream/models/embedder.onnx --w W --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from export import backbone, onnx_utils
from export.embedder import CROP_PREPROCESSING, EMBEDDER_NAME, EmbedderNet, export_embedder

COMBINED_VERSION = "2.0.0"  # 1.x: the fine-tuned features alone


def _conv_bn_pairs(trunk: backbone.EfficientNetLite) -> list[tuple[Any, Any]]:
    """Every (conv, bn) of the trunk in forward order (the order the ONNX graph's Conv nodes follow)."""
    pairs: list[tuple[Any, Any]] = [(trunk._conv_stem, trunk._bn0)]
    block: Any
    for block in trunk._blocks:
        if block.has_expand:
            pairs.append((block._expand_conv, block._bn0))
        pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
    pairs.append((trunk._conv_head, trunk._bn1))
    return pairs


def finetuned_from_onnx(path: Path, variant: str = "lite0") -> EmbedderNet:
    """The fine-tuned ``EmbedderNet`` (eval mode) whose weights are in the ONNX embedder at ``path``.

    Raises ValueError when the graph's convolutions or projection do not fit the ``variant`` trunk."""
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    trunk = backbone.build(variant, pretrained=False)
    pairs = _conv_bn_pairs(trunk)
    if len(convs) != len(pairs):
        raise ValueError(f"{path}: {len(convs)} Conv nodes, a {variant} trunk has {len(pairs)}")
    proj_w = inits.get("net.proj.weight")
    if proj_w is None or "net.proj.bias" not in inits:
        raise ValueError(f"{path}: no net.proj.weight/bias initializer: not a fine-tuned embedder")
    net = EmbedderNet(trunk, int(proj_w.shape[0]))
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs, strict=True):
            weight = inits[node.input[1]]
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{path}: conv {node.name} has shape {weight.shape}, expected {tuple(conv.weight.shape)}"
                )
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(bias.copy()))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1: BN is "+ bias"
        net.proj.weight.copy_(torch.from_numpy(proj_w.copy()))
        net.proj.bias.copy_(torch.from_numpy(inits["net.proj.bias"].copy()))
    return net.eval()


class CombinedNet(nn.Module):
    """Normalised float RGB NCHW -> L2-normalised [N, D_ft + 1280]: fine-tuned and ImageNet features.

    ``shared_upto``: blocks 0..shared_upto (and the stem) are taken from ``finetuned`` and run once; they
    must hold ImageNet weights in it (fine-tuning froze them). -1 runs both trunks in full."""

    def __init__(
        self, finetuned: EmbedderNet, imagenet: backbone.EfficientNetLite, w: float, shared_upto: int = -1
    ) -> None:
        super().__init__()
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"the ImageNet weight w must be in [0, 1], got {w}")
        self.finetuned = finetuned
        self.imagenet = imagenet
        self.shared_upto = shared_upto
        self.w = w
        self.alpha, self.beta = math.sqrt(1.0 - w), math.sqrt(w)

    @property
    def dim(self) -> int:
        return int(self.finetuned.proj.out_features) + backbone.HEAD_CHANNELS

    def _tail(self, trunk: backbone.EfficientNetLite, x: torch.Tensor, start: int) -> torch.Tensor:
        if start == 0:
            x = F.relu6(trunk._bn0(trunk._conv_stem(x)))
        for block in trunk._blocks[start:]:
            x = block(x)
        return trunk.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = 0
        if self.shared_upto >= 0:
            ft = self.finetuned.trunk
            x = F.relu6(ft._bn0(ft._conv_stem(x)))
            for block in ft._blocks[: self.shared_upto + 1]:
                x = block(x)
            start = self.shared_upto + 1
        a = F.normalize(self.finetuned.proj(self._tail(self.finetuned.trunk, x, start)), dim=1)
        b = F.normalize(self._tail(self.imagenet, x, start), dim=1)
        return F.normalize(torch.cat([self.alpha * a, self.beta * b], dim=1), dim=1)


def shared_prefix(finetuned: EmbedderNet, imagenet: backbone.EfficientNetLite, atol: float = 1e-4) -> int:
    """The last block index up to which ``finetuned`` computes what ``imagenet`` does (stem included),
    -1 when even the stem differs. Checked on a random input, so BN folding does not matter."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ft, im = finetuned.trunk.eval(), imagenet.eval()
    with torch.no_grad():
        a, b = F.relu6(ft._bn0(ft._conv_stem(x))), F.relu6(im._bn0(im._conv_stem(x)))
        if not torch.allclose(a, b, atol=atol):
            return -1
        last = -1
        for i, (ba, bb) in enumerate(zip(ft._blocks, im._blocks, strict=True)):
            a, b = ba(a), bb(b)
            if not torch.allclose(a, b, atol=atol, rtol=1e-3):
                break
            last = i
    return last


def combined_metadata(finetuned_meta: dict[str, str], size: int, dim: int, w: float, shared_upto: int) -> dict:
    """metadata_props of the combined embedder: the fine-tuned model's, with the new dim and the mix."""
    meta: dict = {k: v for k, v in finetuned_meta.items() if k not in ("embedding_dim", "input_size")}
    meta.update(
        {
            "name": EMBEDDER_NAME,
            "version": COMBINED_VERSION,
            "input_size": size,
            "embedding_dim": dim,
            "normalisation": onnx_utils.normalisation_meta(backbone.MEAN, backbone.STD),
            "crop_preprocessing": CROP_PREPROCESSING,
            "combination": json.dumps(
                {
                    "finetuned": {"dim": dim - backbone.HEAD_CHANNELS, "version": finetuned_meta.get("version", "")},
                    "imagenet": {"dim": backbone.HEAD_CHANNELS, "weights": backbone.weights_package("lite0")},
                    "imagenet_weight": w,
                    "shared_blocks": shared_upto + 1,
                    "score": "cosine = (1 - w) * fine-tuned cosine + w * ImageNet cosine",
                }
            ),
        }
    )
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.combined", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--finetuned",
        type=Path,
        default=Path("stream/models/embedder.onnx"),
        help="fine-tuned embedder ONNX (its weights are read back from the graph)",
    )
    p.add_argument("--w", type=float, required=True, help="weight of the ImageNet features, 0..1")
    p.add_argument("--out", type=Path, required=True, help="output folder (embedder.onnx, export.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    try:
        if not args.finetuned.is_file():
            raise ValueError(f"no fine-tuned embedder at {args.finetuned}")
        finetuned = finetuned_from_onnx(args.finetuned)
        imagenet = backbone.build("lite0", pretrained=True).eval()
        shared = shared_prefix(finetuned, imagenet)
        net = CombinedNet(finetuned, imagenet, args.w, shared).eval()
    except (ValueError, onnx.checker.ValidationError, OSError) as exc:
        print(f"python -m export.combined: error: {exc}", file=sys.stderr)
        return 2
    proto = onnx.load(str(args.finetuned), load_external_data=False)
    meta = {e.key: e.value for e in proto.metadata_props}
    size = int(meta.get("input_size", "288"))
    rng = np.random.default_rng(0)
    check = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "embedder.onnx"
    report = export_embedder(
        net, size, net.dim, path, metadata=combined_metadata(meta, size, net.dim, args.w, shared), check=check
    )
    result = {
        "onnx": str(path),
        "torch_vs_ort": report,
        "w": args.w,
        "shared_blocks": shared + 1,
        "finetuned": str(args.finetuned),
        "dim": net.dim,
    }
    (args.out / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
