"""Training, export and measurement of the checkout segmenter (the network is in export/segnet.py).

Training: weighted cross-entropy (the boundary class is rare and decides whether touching items
separate) on composites generated on the fly by a worker process, for a wall-clock budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from export import backbone
from export.composites import (
    BAND,
    HELDOUT_STYLES,
    TRAIN_STYLES,
    CompositeMaker,
    default_iconic_dir,
    demo_sprites,
    load_sprites,
    make_batch,
    split_iconic,
    targets,
)
from export.onnx_utils import export_onnx, normalisation_meta, ort_session, quantize_int8
from export.realism import HANDS_SHARE, RealisticMaker, load_assets
from export.segmenter_card import card
from export.segnet import (
    CLASS_NAMES,
    DEFAULT_SIZE,
    NAME,
    SegNet,
    export_wrapper,
    freeze_bn,
    load_onnx_weights,
    to_input,
)
from export.ship import ship_model
from stream.synthetic.scene import CheckoutScene

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- data


# Composite seeds: training run ``seed`` draws from ``seed * SEED_STRIDE`` on, validation from
# ``VAL_SEED0`` on, so seeds 0 .. MAX_SEED never reach the validation composites.
SEED_STRIDE = 10**7
VAL_SEED0 = 10**8
MAX_SEED = VAL_SEED0 // SEED_STRIDE - 1


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 40.0
    size: tuple[int, int] = DEFAULT_SIZE
    batch: int = 8
    lr: float = 2e-3
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    class_weights: tuple[float, float, float] = (1.0, 1.0, 3.0)
    max_steps: int = 1_000_000
    seed: int = 0
    threads: int = 1
    workers: int = 1
    iconic_dir: str = ""
    background_images: tuple[str, ...] = field(default_factory=tuple)
    val_images: int = 64
    freeze_bn: bool = False  # fine-tuning from an exported (BN-folded) model
    realism: float = 0.0  # share of realistic composites (export/realism.py: real hands, photos)
    data_root: str = ""  # ../shared/data: hands TRAIN split, clips, grocery-store train photos
    metal: float = 0.0  # share of realistic items that are grey low-contrast parts (realism.metal_part)
    hands: float = HANDS_SHARE  # share of realistic composites with 1-2 hands in view


_WORKER_MAKER: CompositeMaker | None = None


def _init_worker(  # noqa: PLR0917 (ProcessPoolExecutor initargs are positional)
    iconic: Sequence[str],
    size: tuple[int, int],
    backgrounds: Sequence[str],
    realism: float = 0.0,
    data_root: str = "",
    metal: float = 0.0,
    hands: float = HANDS_SHARE,
) -> None:
    global _WORKER_MAKER  # noqa: PLW0603
    cv2.setNumThreads(1)
    sprites = load_sprites([Path(p) for p in iconic]) + demo_sprites()
    if realism > 0 and data_root:
        assets = load_assets(Path(data_root), products=[Path(p).stem for p in iconic])
        _WORKER_MAKER = RealisticMaker(
            sprites,
            assets,
            size,
            share=realism,
            metal_share=metal,
            hands_share=hands,
            backgrounds=_read_backgrounds(backgrounds),
        )
    else:
        _WORKER_MAKER = CompositeMaker(sprites, size, backgrounds=_read_backgrounds(backgrounds))


def _read_backgrounds(paths: Sequence[str]) -> list[np.ndarray]:
    out = []
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read background image {p}")
        out.append(img)
    return out


def _worker_batch(seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert _WORKER_MAKER is not None
    return make_batch(_WORKER_MAKER, seeds)


def batches(cfg: TrainConfig, iconic: Sequence[Path], start: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless training batches (seeds ``start``, ``start + 1``...) from a worker process, 2 ahead."""
    init = (
        [str(p) for p in iconic],
        cfg.size,
        list(cfg.background_images),
        cfg.realism,
        cfg.data_root,
        cfg.metal,
        cfg.hands,
    )
    if cfg.workers == 0:
        _init_worker(*init)
        step = start
        while True:
            yield _worker_batch(list(range(step, step + cfg.batch)))
            step += cfg.batch
    with ProcessPoolExecutor(cfg.workers, initializer=_init_worker, initargs=init) as pool:
        pending: list[Future] = []
        step = start
        while True:
            while len(pending) < 2 + cfg.workers:
                pending.append(pool.submit(_worker_batch, list(range(step, step + cfg.batch))))
                step += cfg.batch
            yield pending.pop(0).result()


def scene_frames(
    size: tuple[int, int], seeds: Sequence[int] = (101, 102), every: int = 90
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CheckoutScene frames at model size: (images, classes, instances)."""
    h, w = size
    ims, cls, ins = [], [], []
    for seed in seeds:
        scene = CheckoutScene(seed=seed, duration_s=30)
        for i in range(every // 2, scene.n_frames, every):
            f = scene.render(i)
            ims.append(cv2.resize(f.image, (w, h), interpolation=cv2.INTER_AREA))
            inst = cv2.resize(f.instance_map, (w, h), interpolation=cv2.INTER_NEAREST)
            ins.append(inst)
            cls.append(targets(inst))
    return np.stack(ims), np.stack(cls), np.stack(ins)


def validation_sets(
    cfg: TrainConfig, train_iconic: Sequence[Path], held_iconic: Sequence[Path]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out seeds with training items; held-out products on held-out counters; scene frames."""
    seeds = range(VAL_SEED0, VAL_SEED0 + cfg.val_images)
    bgs = _read_backgrounds(cfg.background_images)
    sets = {
        "composites_seen_items": make_batch(
            CompositeMaker(load_sprites(train_iconic) + demo_sprites(), cfg.size, backgrounds=bgs), seeds
        )
    }
    if held_iconic:  # on the user's counter when fitting, else on counter styles never trained on
        styles = TRAIN_STYLES if bgs else HELDOUT_STYLES
        maker = CompositeMaker(
            load_sprites(held_iconic), cfg.size, styles=styles, backgrounds=bgs, procedural_share=0.0
        )
        sets["composites_heldout_items" + ("" if bgs else "_counters")] = make_batch(maker, seeds)
    sets["checkout_scene"] = scene_frames(cfg.size)
    return sets


# --------------------------------------------------------------------------- train / evaluate


@torch.no_grad()
def predict(net: SegNet, images: np.ndarray, batch: int = 16) -> np.ndarray:
    net.eval()
    out = [net(to_input(images[i : i + batch])).argmax(1).to(torch.uint8).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


def pixel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Foreground IoU (item or boundary vs background), boundary IoU and pixel accuracy."""

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0

    return {
        "foreground_iou": iou(pred > 0, truth > 0),
        "boundary_iou": iou(pred == 2, truth == 2),
        "pixel_accuracy": float((pred == truth).mean()),
    }


def evaluate(net: SegNet, sets: Mapping[str, tuple[np.ndarray, ...]]) -> dict[str, dict[str, float]]:
    return {name: pixel_metrics(predict(net, s[0]), s[1]) for name, s in sets.items()}


def _lr_factor(progress: float) -> float:
    """Linear warm-up over the first 3% of the budget, then cosine decay to 5%."""
    if progress < 0.03:
        return max(progress / 0.03, 0.05)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.03) / 0.97)))


def train(
    cfg: TrainConfig,
    net: SegNet | None = None,
    *,
    batch_source: Iterator[tuple[np.ndarray, ...]] | None = None,
    progress: bool = True,
) -> tuple[SegNet, dict]:
    """Train for ``cfg.minutes`` of wall time (or ``cfg.max_steps``); returns the net and a summary."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    net = net or SegNet(pretrained=True)
    if batch_source is None:
        train_iconic, _ = _iconic(cfg)
        batch_source = batches(cfg, train_iconic, start=cfg.seed * SEED_STRIDE)
    encoder = [p for n, p in net.named_parameters() if n.startswith(("stem", "blocks"))]
    decoder = [p for n, p in net.named_parameters() if not n.startswith(("stem", "blocks"))]
    opt = torch.optim.AdamW(
        [{"params": encoder, "lr": cfg.lr * cfg.encoder_lr_scale}, {"params": decoder, "lr": cfg.lr}],
        weight_decay=cfg.weight_decay,
    )
    base = [g["lr"] for g in opt.param_groups]
    weights = torch.tensor(cfg.class_weights)
    budget = cfg.minutes * 60.0
    t0, step, losses = time.monotonic(), 0, []
    bar = tqdm(total=round(budget), unit="s", disable=not progress, desc="segmenter")
    net.train()
    if cfg.freeze_bn:
        freeze_bn(net)
    while step < cfg.max_steps:
        elapsed = time.monotonic() - t0
        if elapsed >= budget:
            break
        for g, lr in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr * _lr_factor(elapsed / budget)
        images, classes, _ = next(batch_source)
        logits = net(to_input(images))
        loss = F.cross_entropy(logits, torch.from_numpy(classes).long(), weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(round(time.monotonic() - t0) - bar.n)
        bar.set_postfix(step=step, loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    net.eval()
    return net, {
        "steps": step,
        "images_seen": step * cfg.batch,
        "minutes": (time.monotonic() - t0) / 60,
        "final_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "config": asdict(cfg),
    }


def save_checkpoint(net: SegNet, summary: dict, path: Path) -> None:
    torch.save({"state_dict": net.state_dict(), "summary": json.dumps(summary)}, path)


def write_card(out: Path, summary: dict, ship: bool) -> None:
    """OUT/segmenter.md from ``summary``; with ``ship``, OUT/segmenter.onnx and that card into stream/models."""
    text = card(summary)
    (out / "segmenter.md").write_text(text)
    if ship:
        ship_model(out / "segmenter.onnx", "segmenter", text)


# --------------------------------------------------------------------------- build: train, export, measure


def latency_ms(path: Path, size: tuple[int, int], threads: int = 1, runs: int = 40) -> float:
    """Median ONNX Runtime CPU latency of one frame."""
    sess = ort_session(path, threads)
    x = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    for _ in range(5):
        sess.run(None, {"images": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"images": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def onnx_predict(path: Path, images: np.ndarray, batch: int = 16) -> np.ndarray:
    sess = ort_session(path, 1)
    return np.concatenate(
        [sess.run(["classes"], {"images": images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    )


def metadata(cfg: TrainConfig, summary: dict, version: str) -> dict[str, object]:
    return {
        "name": NAME,
        "version": version,
        "input_size": list(cfg.size),
        "class_names": list(CLASS_NAMES),
        "normalisation": normalisation_meta(backbone.MEAN, backbone.STD),
        "boundary_band_px": BAND,
        "training_data": (
            f"{summary['images_seen']} synthetic composites: grocery-store iconic packshots "
            f"(cut out, {summary.get('n_train_iconic', 0)} products), 8 procedural demo "
            "products, procedural bottles/cans/boxes/produce on procedural counters; hands as "
            "background"
            + (
                f"; {cfg.realism:.0%} realistic: real hand cutouts (hands TRAIN split), "
                "photo backgrounds, photo-textured items, hard shadows, text overlays"
                if cfg.realism
                else ""
            )
        ),
        "architecture": "U-Net, EfficientNet-Lite0 encoder (ImageNet) to stride 16, DS-conv decoder",
    }


def build_segmenter(
    out: Path,
    cfg: TrainConfig,
    *,
    init: Path | None = None,
    version: str = "1",
    progress: bool = True,
    quantize: bool = True,
) -> dict:
    """Train (from ImageNet, or from the ONNX model ``init``), export fp32 (and int8 when it keeps
    accuracy and is faster), measure on held-out sets; writes OUT/segmenter.onnx and summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    net = SegNet(pretrained=init is None)
    if init is not None:
        load_onnx_weights(net, init)
    net, summary = train(cfg, net, progress=progress)
    save_checkpoint(net, summary, out / "checkpoint.pt")
    return export_measured(net, summary, cfg, out, version=version, quantize=quantize)


def export_measured(net: SegNet, summary: dict, cfg: TrainConfig, out: Path, *, version: str, quantize: bool) -> dict:
    """Export ``net`` (fp32, and int8 when it keeps accuracy and is faster), measure it on the held-out
    sets and write OUT/segmenter.onnx and summary.json (``summary`` plus the figures); returns it."""
    out.mkdir(parents=True, exist_ok=True)
    train_iconic, held_iconic = _iconic(cfg)
    summary["n_train_iconic"] = len(train_iconic)
    summary["heldout_iconic"] = [p.stem for p in held_iconic]
    sets = validation_sets(cfg, train_iconic, held_iconic)
    summary["torch"] = evaluate(net, sets)
    fp32 = export_onnx(
        export_wrapper(net),
        sets["checkout_scene"][0][:1],
        out / "segmenter.fp32.onnx",
        input_name="images",
        output_names=["classes", "confidence"],
        metadata=metadata(cfg, summary, version),
    )
    probe = np.concatenate([s[0][:8] for s in sets.values()])
    with torch.no_grad():
        ref = export_wrapper(net)(torch.from_numpy(probe))[0].numpy()
    summary["torch_vs_ort_class_agreement"] = float((onnx_predict(fp32, probe) == ref).mean())
    variants = {"fp32": fp32}
    if quantize:
        calib = [s[0][i : i + 4] for s in sets.values() for i in range(0, min(len(s[0]), 16), 4)]
        variants["int8"] = quantize_int8(fp32, out / "segmenter.int8.onnx", calib)
    summary["onnx"] = {}
    for name, path in variants.items():
        summary["onnx"][name] = {
            "latency_ms_1thread": latency_ms(path, cfg.size),
            **{k: pixel_metrics(onnx_predict(path, s[0]), s[1]) for k, s in sets.items()},
        }
    chosen = "fp32"
    if "int8" in summary["onnx"]:
        f, q = summary["onnx"]["fp32"], summary["onnx"]["int8"]
        iou_drop = max(f[k]["foreground_iou"] - q[k]["foreground_iou"] for k in sets)
        bnd_drop = max(f[k]["boundary_iou"] - q[k]["boundary_iou"] for k in sets)
        if iou_drop <= 0.005 and bnd_drop <= 0.01 and q["latency_ms_1thread"] < 0.9 * f["latency_ms_1thread"]:
            chosen = "int8"
    summary["chosen"] = chosen
    (out / "segmenter.onnx").write_bytes(variants[chosen].read_bytes())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _iconic(cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    if cfg.iconic_dir and Path(cfg.iconic_dir).is_dir():
        return split_iconic(Path(cfg.iconic_dir))
    log.warning("no iconic packshots at %r: training on procedural products only", cfg.iconic_dir)
    return [], []


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export segmenter", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--minutes", type=float, default=40.0, help="training wall-clock budget")
    p.add_argument("--tiny", action="store_true", help="a few steps and export (CI smoke test)")
    p.add_argument("--iconic", default=str(default_iconic_dir()), help="folder of *.jpg packshots on white")
    p.add_argument("--init", type=Path, default=None, help="start from this exported fp32 segmenter")
    p.add_argument("--no-int8", action="store_true", help="skip static int8 quantisation")
    p.add_argument("--ship", action="store_true", help="copy the result into stream/models with its card")
    p.add_argument("--version", default="1")
    p.add_argument(
        "--realism",
        type=float,
        default=0.6,
        help="share of realistic composites (real hand cutouts of the hands TRAIN split, photo "
        "backgrounds, photo-textured items, hard shadows, text); 0 = synthetic only",
    )
    p.add_argument(
        "--data",
        default=str(default_iconic_dir().parents[1]),
        help="shared data root (real/hands, clips, grocery-store/train)",
    )
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    p.add_argument(
        "--metal",
        type=float,
        default=0.0,
        help="share of realistic items that are grey low-contrast parts (steel rods, bolts, tins)",
    )
    p.add_argument(
        "--hands",
        type=float,
        default=TrainConfig.hands,
        help="share of realistic composites with 1-2 hands in view (real cutouts, relit)",
    )
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of the weights and composites")


def run(args: argparse.Namespace) -> int:
    for name in ("realism", "metal", "hands"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(
                f"python -m export segmenter: error: --{name}: expected a share in [0, 1], found {getattr(args, name)}",
                file=sys.stderr,
            )
            return 2
    if not 0 <= args.seed <= MAX_SEED:
        print(f"python -m export segmenter: error: --seed: expected 0-{MAX_SEED}, found {args.seed}", file=sys.stderr)
        return 2
    common = {
        "iconic_dir": args.iconic,
        "realism": args.realism,
        "data_root": args.data,
        "freeze_bn": args.init is not None,
        "metal": args.metal,
        "hands": args.hands,
        "seed": args.seed,
    }
    cfg = TrainConfig(minutes=args.minutes, lr=args.lr, **common)
    if args.tiny:
        cfg = TrainConfig(minutes=1.0, max_steps=2, batch=2, workers=0, val_images=4, **common)
    summary = build_segmenter(
        args.out, cfg, init=args.init, version=args.version, quantize=not args.no_int8 and not args.tiny
    )
    write_card(args.out, summary, args.ship)
    print(
        json.dumps(
            {k: summary[k] for k in ("steps", "images_seen", "chosen", "onnx", "torch_vs_ort_class_agreement")},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
