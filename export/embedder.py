"""Embedder: EfficientNet-Lite0/Lite1 trunk + linear projection, fine-tuned by metric learning.

Loss: CosFace (normalised-softmax with an additive cosine margin) over one learned proxy per
product. Proxy losses converge in few epochs with small batches (what a 2-core CPU allows) and need
no pair mining; the margin keeps same-product crops tight for the nearest-neighbour catalog search.
It beat supervised contrastive loss (``loss="supcon"``) on val with products held out; the numbers of
every recipe tried are in the model card's recipe search (``stream/models/embedder.md``, generated).
The early stages (stride <= 8) stay frozen at ImageNet values: that halves the backward cost and
keeps the low-level features general for products never seen in training.

Learning without forgetting (``TrainConfig.distill`` / ``distill_head``, ``python -m export.embedder
train``): a frozen ImageNet teacher sees every crop and a loss keeps the trunk's pooled features and the
embedding's cosine geometry close to its; ``GeneralNet`` then ships the projection and the pooled features
side by side (one trunk). Measured once (10 products held out, 325 steps / 3.6 epochs in 55 min on a loaded
machine, distill 10, distill_head 1, video augmentation): it lost to both the frozen features on the real
top-down set (86.8 % at the w picked on held-out grocery products vs 89.5 %) and to plain fine-tuning on grocery
val (77.0 % vs 83.4 % for the held-out recipe): not shipped (benchmarks/results/recognition_distilled_sweep.json).

The training schedule is time-budgeted: learning rates follow a cosine over the wall-clock budget,
so a shared, slower machine trains fewer steps instead of overrunning.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export import backbone, onnx_utils
from export.data import HELD_OUT, Split, augment

log = logging.getLogger(__name__)

EMBEDDER_NAME = "checkout-embedder"
CROP_PREPROCESSING = "letterbox: keep aspect, pad grey 127 (stream.stages.embed.letterbox)"
EMBEDDER_VERSION = "1.0.0"
# 2.x: export.combined (two trunks, not shipped); 3.x: GeneralNet (one distilled trunk, two parts)
GENERAL_VERSION = "3.0.0"
LOSSES = ("cosface", "supcon")


@dataclass
class TrainConfig:
    variant: str = "lite0"  # EfficientNet-Lite backbone: "lite0" or "lite1"
    size: int = 288  # crop side S fed to the network
    dim: int = 128  # embedding dimension D
    batch: int = 32
    minutes: float = 58.0  # wall-clock training budget
    max_epochs: int = 30
    max_steps: int = 0  # 0 = no limit (used by --tiny)
    lr_backbone: float = 3e-4
    lr_head: float = 3e-3
    weight_decay: float = 1e-4
    loss: str = "cosface"  # "cosface": one proxy per product; "supcon": supervised contrastive over the batch
    scale: float = 20.0  # 1 / temperature (CosFace s; SupCon 1/tau)
    margin: float = 0.15  # CosFace m (0: plain normalised softmax); unused by SupCon
    per_product: int = 4  # SupCon batches: batch / per_product products, per_product crops of each
    # Blocks 0..freeze_upto keep their ImageNet weights; None: every block at stride <= 8
    # (Lite0: 0-4, Lite1: 0-6), where features are generic edges and textures; -1: train all.
    freeze_upto: int | None = None
    drop_connect: float = 0.1
    # Each packshot appears this many times per epoch (1 vs ~30 photos). They help photo matching too
    # (fewer repeats scored lower: the model card's recipe search).
    iconic_repeat: int = 8
    warmup_frac: float = 0.04
    seed: int = 0
    held_out: tuple[str, ...] = field(default=HELD_OUT)
    # Learning without forgetting: weight of a loss keeping the trunk's pooled 1280-d features close to a
    # frozen ImageNet teacher's on every training crop (1 - cosine to the teacher's feature, plus the squared
    # difference of the batch's cosine-similarity matrices). 0: off (plain fine-tuning).
    distill: float = 0.0
    # Weight of the same similarity-matrix loss between the projected embedding and the teacher: keeps the
    # embedding's own cosine geometry close to ImageNet's, so products never trained on stay apart.
    distill_head: float = 0.0
    video_aug: bool = False  # motion blur, partial views and tiny crops (export.data.augment(video=True))
    # Exported embedding: normalise([sqrt(1 - w) * projected, sqrt(w) * pooled trunk features]), one trunk;
    # 0 ships the projection alone (D-d). Picked after training on held-out grocery products.
    general_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.loss == "supcon" and (self.per_product < 2 or self.batch % self.per_product):
            raise ValueError(
                f"supcon needs --per-product >= 2 that divides the batch ({self.batch}), got {self.per_product}"
            )


class EmbedderNet(nn.Module):
    """Normalised float RGB NCHW -> L2-normalised [N, dim]."""

    def __init__(self, trunk: backbone.EfficientNetLite, dim: int, freeze_upto: int = -1) -> None:
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Linear(backbone.HEAD_CHANNELS, dim)
        self.frozen: list[nn.Module] = []
        if freeze_upto >= 0:
            self.frozen = [trunk._conv_stem, trunk._bn0, *trunk._blocks[: freeze_upto + 1]]
        for module in self.frozen:
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> EmbedderNet:
        super().train(mode)
        for module in self.frozen:  # frozen BN keeps its ImageNet statistics
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.trunk.forward_pool(x)), dim=1)

    def embed_and_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised projected embedding, L2-normalised pooled 1280-d trunk features)."""
        pooled = self.trunk.forward_pool(x)
        return F.normalize(self.proj(pooled), dim=1), F.normalize(pooled, dim=1)


class GeneralNet(nn.Module):
    """One trunk, two views of it: normalise([sqrt(1 - w) * projected, sqrt(w) * pooled]), so the cosine of
    two outputs is (1 - w) cos(projected) + w cos(pooled). With a trunk distilled towards ImageNet the
    pooled part keeps the general features and the projection adds the grocery-tuned ones, at one trunk's
    CPU cost. Output dim D + 1280."""

    def __init__(self, net: EmbedderNet, w: float) -> None:
        super().__init__()
        if not 0.0 < w <= 1.0:
            raise ValueError(f"general weight must be in (0, 1], got {w}")
        self.net = net
        self.a, self.b = math.sqrt(1.0 - w), math.sqrt(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb, pooled = self.net.embed_and_pool(x)
        return F.normalize(torch.cat([self.a * emb, self.b * pooled], dim=1), dim=1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, features: bool = True) -> torch.Tensor:
    """Learning-without-forgetting loss between L2-normalised student and teacher rows of one batch:
    squared difference of the two cosine-similarity matrices (geometry), plus, when ``features`` (same
    space: the trunk's pooled features), 1 - cosine of each student row to its teacher row."""
    geometry = ((student @ student.T - teacher @ teacher.T) ** 2).mean()
    if not features:
        return geometry
    return geometry + (1.0 - (student * teacher).sum(1)).mean()


class PooledNet(nn.Module):
    """The frozen ImageNet baseline: global-average-pooled 1280-d features, L2-normalised."""

    def __init__(self, trunk: backbone.EfficientNetLite) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.trunk.forward_pool(x), dim=1)


class CosFace(nn.Module):
    def __init__(self, dim: int, n_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos = emb @ F.normalize(self.proxies, dim=1).T
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]))
        return F.cross_entropy(logits, labels), (cos.argmax(1) == labels).float().mean()


class SupCon(nn.Module):
    """Supervised contrastive loss (Khosla et al., 2020): every other crop of the same product in the batch
    is a positive. No parameters; the batch must hold several crops per product (``_epoch_batches``)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self_pair = torch.eye(len(labels), dtype=torch.bool)
        sim = (self.scale * emb @ emb.T).masked_fill(self_pair, float("-inf"))
        pos = (labels[:, None] == labels[None, :]) & ~self_pair
        log_prob = (sim - torch.logsumexp(sim, dim=1, keepdim=True)).masked_fill(~pos, 0.0)
        has = pos.any(1)
        loss = -(log_prob.sum(1)[has] / pos.sum(1)[has]).mean()
        return loss, (labels[sim.argmax(1)] == labels).float().mean()  # batch nearest-neighbour accuracy


def to_input(batch_bgr: np.ndarray) -> torch.Tensor:
    """uint8 [N,S,S,3] BGR -> normalised float RGB NCHW: the same maths as the ONNX wrapper."""
    x = torch.from_numpy(batch_bgr[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    return backbone.normalise(x)


def _epoch_order(rng: np.random.Generator, split: Split, iconic_repeat: int) -> np.ndarray:
    photos = np.flatnonzero(~split.iconic)
    shots = np.repeat(np.flatnonzero(split.iconic), iconic_repeat)
    return rng.permutation(np.concatenate([photos, shots]))


def _epoch_batches(rng: np.random.Generator, split: Split, cfg: TrainConfig) -> np.ndarray:
    """[n_batches, batch] sample indices for one epoch. CosFace: a shuffle of every photo plus the packshots
    repeated ``iconic_repeat`` times. SupCon: as many batches, each ``per_product`` crops of
    ``batch / per_product`` random products, drawn from the same photo + repeated-packshot pool."""
    order = _epoch_order(rng, split, cfg.iconic_repeat)
    n_batches = len(order) // cfg.batch
    if cfg.loss == "cosface":
        return order[: n_batches * cfg.batch].reshape(n_batches, cfg.batch)
    pools = [order[split.labels[order] == p] for p in range(len(split.products))]
    k = cfg.per_product
    batches = np.empty((n_batches, cfg.batch), dtype=np.int64)
    for b in range(n_batches):
        products = rng.choice(len(pools), cfg.batch // k, replace=False)
        batches[b] = np.concatenate([rng.choice(pools[p], k, replace=len(pools[p]) < k) for p in products])
    return batches


def _distill_term(
    teacher: backbone.EfficientNetLite, x: torch.Tensor, emb: torch.Tensor, pooled: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    """cfg.distill x distill_loss(pooled, teacher) + cfg.distill_head x geometry(embedding, teacher)."""
    with torch.no_grad():
        target = F.normalize(teacher.forward_pool(x), dim=1)
    kd = cfg.distill * distill_loss(pooled, target) if cfg.distill > 0 else torch.zeros(())
    if cfg.distill_head > 0:
        kd = kd + cfg.distill_head * distill_loss(emb, target, features=False)
    return kd


def train_embedder(split: Split, cfg: TrainConfig, progress: bool = True) -> tuple[EmbedderNet, dict]:
    """Fine-tune on ``split``; returns the model (eval mode) and a summary dict."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    trunk = backbone.build(cfg.variant, pretrained=True)
    freeze = trunk.last_block_at(8) if cfg.freeze_upto is None else cfg.freeze_upto
    cfg = replace(cfg, freeze_upto=freeze)  # the summary records the resolved depth
    model = EmbedderNet(trunk, cfg.dim, freeze)
    for block in model.trunk._blocks:
        block.drop_connect = cfg.drop_connect  # type: ignore[assignment]
    n_products = len(split.products)
    loss_fn = CosFace(cfg.dim, n_products, cfg.scale, cfg.margin) if cfg.loss == "cosface" else SupCon(cfg.scale)
    trunk_params = [p for p in model.trunk.parameters() if p.requires_grad]
    groups = [
        {"params": trunk_params, "lr": cfg.lr_backbone, "weight_decay": cfg.weight_decay},
        {"params": list(model.proj.parameters()), "lr": cfg.lr_head, "weight_decay": cfg.weight_decay},
    ]
    if proxies := list(loss_fn.parameters()):  # CosFace learns one proxy per product; SupCon has none
        groups.append({"params": proxies, "lr": cfg.lr_head * 3, "weight_decay": 0.0})
    base_lrs = [g["lr"] for g in groups]
    teacher: backbone.EfficientNetLite | None = None
    if cfg.distill > 0 or cfg.distill_head > 0:
        teacher = backbone.build(cfg.variant, pretrained=True).eval()
        for p in teacher.parameters():
            p.requires_grad = False
    distills: list[float] = []
    opt = torch.optim.AdamW(groups)
    budget_s = cfg.minutes * 60
    start = time.monotonic()
    step, epoch, losses, accs = 0, 0, [], []
    photo_idx = np.flatnonzero(~split.iconic)
    done = False
    model.train()
    while not done and epoch < cfg.max_epochs:
        batches = _epoch_batches(rng, split, cfg)
        bar = tqdm(range(len(batches)), desc=f"epoch {epoch + 1}", disable=not progress, leave=False)
        for b in bar:
            frac = (time.monotonic() - start) / budget_s
            if frac >= 1.0 or (cfg.max_steps and step >= cfg.max_steps):
                done = True
                break
            warm = min(1.0, frac / cfg.warmup_frac) if cfg.warmup_frac > 0 else 1.0
            factor = warm * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
            for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = lr * factor
            idx = batches[b]
            crops = np.stack(
                [
                    augment(
                        rng,
                        split.images[i],
                        bool(split.iconic[i]),
                        split.images[rng.choice(photo_idx)],
                        cfg.size,
                        video=cfg.video_aug,
                    )
                    for i in idx
                ]
            )
            labels = torch.from_numpy(split.labels[idx])
            x = to_input(crops)
            emb, pooled = model.embed_and_pool(x)
            loss, acc = loss_fn(emb, labels)
            if teacher is not None:
                kd = _distill_term(teacher, x, emb, pooled, cfg)
                loss = loss + kd
                distills.append(float(kd.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            accs.append(float(acc))
            step += 1
            bar.set_postfix(
                loss=f"{np.mean(losses[-20:]):.3f}",
                kd=f"{np.mean(distills[-20:]) if distills else 0.0:.3f}",
                acc=f"{np.mean(accs[-20:]):.2f}",
                min=f"{(time.monotonic() - start) / 60:.1f}",
            )
        bar.close()
        epoch += 1
        if losses:
            log.info(
                "epoch %d: step %d loss %.3f train-acc %.3f (%.1f min)",
                epoch,
                step,
                np.mean(losses[-50:]),
                np.mean(accs[-50:]),
                (time.monotonic() - start) / 60,
            )
    model.eval()
    summary = {
        "steps": step,
        "epochs": round(step * cfg.batch / max(1, len(_epoch_order(rng, split, cfg.iconic_repeat))), 2),
        "minutes": round((time.monotonic() - start) / 60, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "final_train_acc": round(float(np.mean(accs[-50:])), 4) if accs else None,
        "final_distill_loss": round(float(np.mean(distills[-50:])), 4) if distills else None,
        "n_products": len(split.products),
        "n_images": int((~split.iconic).sum()),
        "n_iconic": int(split.iconic.sum()),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    return model, summary


def save_checkpoint(model: EmbedderNet, summary: dict, path: Path) -> None:
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")


def config_variant(config: dict) -> str:
    """The backbone a checkpoint's config names; checkpoints from before Lite1 have no key: Lite0."""
    return str(config.get("variant", "lite0"))


def load_checkpoint(path: Path) -> tuple[EmbedderNet, dict]:
    summary = json.loads(path.with_suffix(".json").read_text())
    variant = config_variant(summary["config"])
    model = EmbedderNet(backbone.build(variant, pretrained=False), summary["config"]["dim"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval(), summary


def embedder_metadata(summary: dict, size: int, dim: int, name: str = EMBEDDER_NAME) -> dict:
    """metadata_props of an embedder ONNX (the runtime's contract check reads these)."""
    cfg = summary.get("config", {})
    held = cfg.get("held_out", [])
    variant = config_variant(cfg)
    training = (
        f"Grocery Store Dataset (Klasson et al. 2019, MIT) train split + iconic packshots: "
        f"{summary.get('n_products', 0)} products, {summary.get('n_images', 0)} photos, "
        f"{summary.get('n_iconic', 0)} packshots; held out: {', '.join(held) or 'none'}"
        if summary.get("steps")
        else f"ImageNet-1k ({backbone.title(variant)} classifier weights), no fine-tuning"
    )
    w = float(cfg.get("general_weight", 0.0))
    extra = {}
    if cfg.get("distill") or cfg.get("distill_head"):
        extra["distillation"] = json.dumps(
            {
                "teacher": f"frozen ImageNet {backbone.title(variant)} pooled features",
                "distill": cfg.get("distill"),
                "distill_head": cfg.get("distill_head"),
                "video_aug": cfg.get("video_aug"),
            }
        )
    if w > 0:
        extra["combination"] = json.dumps(
            {"general_weight": w, "parts": [f"projection ({cfg.get('dim')}-d)", "pooled trunk features (1280-d)"]}
        )
    return {
        **extra,
        "name": name,
        "version": GENERAL_VERSION if w > 0 else EMBEDDER_VERSION,
        "input_size": size,
        "embedding_dim": dim,
        "normalisation": onnx_utils.normalisation_meta(backbone.MEAN, backbone.STD),
        "crop_preprocessing": CROP_PREPROCESSING,
        "training_data": training,
        "recipe": json.dumps({k: summary[k] for k in ("steps", "epochs", "minutes") if k in summary}),
        "backbone": f"{backbone.title(variant)} (ImageNet, {backbone.weights_package(variant)})",
    }


def export_embedder(
    net: nn.Module, size: int, dim: int, path: Path, *, metadata: dict, check: np.ndarray | None = None
) -> dict:
    """Wrap ``net`` with in-graph preprocessing, export to ``path`` and compare with torch on
    ``check`` (uint8 [N,S,S,3]; random pixels when None). Returns the comparison report."""
    wrapped = onnx_utils.InGraphPreprocess(net, backbone.MEAN, backbone.STD).eval()
    example = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    onnx_utils.export_onnx(wrapped, example, path, input_name="crops", output_names=["embeddings"], metadata=metadata)
    check = example if check is None else check
    return onnx_utils.compare_with_torch(wrapped, path, check)["embeddings"]


def export_checkpoint(checkpoint: Path, out: Path, general_weight: float | None = None) -> dict:
    """Export a training checkpoint as ``out/embedder.onnx``; ``general_weight`` (default: the
    checkpoint's ``general_weight``) > 0 ships ``GeneralNet``. Returns the export report."""
    model, summary = load_checkpoint(checkpoint)
    cfg = summary["config"]
    w = float(cfg.get("general_weight", 0.0) if general_weight is None else general_weight)
    summary = {**summary, "config": {**cfg, "general_weight": w}}
    size = int(cfg["size"])
    net: nn.Module = GeneralNet(model, w).eval() if w > 0 else model
    dim = int(cfg["dim"]) + (backbone.HEAD_CHANNELS if w > 0 else 0)
    out.mkdir(parents=True, exist_ok=True)
    check = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    report = export_embedder(
        net, size, dim, out / "embedder.onnx", metadata=embedder_metadata(summary, size, dim), check=check
    )
    out.joinpath("checkpoint.json").write_text(json.dumps(summary, indent=2) + "\n")
    result = {"onnx": str(out / "embedder.onnx"), "general_weight": w, "dim": dim, "torch_vs_ort": report}
    out.joinpath("export.json").write_text(json.dumps({**result, "train": summary}, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m export.embedder train|export``: the distilled (learning-without-forgetting) recipe.

    train: fine-tune with the distillation options (``TrainConfig.distill``, ``distill_head``,
    ``video_aug``) and write ``OUT/checkpoint.pt`` + ``OUT/embedder.onnx`` (projection alone) +
    ``OUT/pooled/embedder.onnx`` (the trunk's pooled features alone), the two a w sweep combines;
    export: ``--checkpoint CKPT --general-weight W --out DIR`` writes the shipped one-trunk graph."""
    p = argparse.ArgumentParser(prog="python -m export.embedder", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--data", type=Path, default=None)
    t.add_argument("--minutes", type=float, default=TrainConfig.minutes)
    t.add_argument("--size", type=int, default=TrainConfig.size)
    t.add_argument("--dim", type=int, default=TrainConfig.dim)
    t.add_argument("--distill", type=float, default=10.0)
    t.add_argument("--distill-head", type=float, default=1.0)
    t.add_argument("--video-aug", action="store_true")
    t.add_argument("--all-products", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--general-weight", type=float, required=True)
    e.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "export":
        print(json.dumps(export_checkpoint(args.checkpoint, args.out, args.general_weight), indent=2))
        return 0
    from export.data import decode_side, default_data_root, load_training  # noqa: PLC0415

    cfg = TrainConfig(
        size=args.size,
        dim=args.dim,
        minutes=args.minutes,
        distill=args.distill,
        distill_head=args.distill_head,
        video_aug=args.video_aug,
        seed=args.seed,
        held_out=() if args.all_products else HELD_OUT,
    )
    split = load_training(args.data or default_data_root(), cfg.held_out, decode_side(cfg.size))
    model, summary = train_embedder(split, cfg, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, summary, args.out / "checkpoint.pt")
    reports = {
        "projection": export_checkpoint(args.out / "checkpoint.pt", args.out, 0.0),
        "pooled": export_checkpoint(args.out / "checkpoint.pt", args.out / "pooled", 1.0),
        "train": {k: v for k, v in summary.items() if k != "config"},
    }
    (args.out / "train.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(json.dumps(reports["train"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
