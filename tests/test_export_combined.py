"""export.combined: a fine-tuned embedder read back from its ONNX computes what the exported graph does,
the combined output's cosine is the w-weighted sum of its parts', and the combined ONNX keeps the
runtime's embedder contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export import backbone
from export.combined import CombinedNet, combined_metadata, finetuned_from_onnx, main, shared_prefix
from export.embedder import EmbedderNet, PooledNet, embedder_metadata, export_embedder, to_input
from export.onnx_utils import ort_session

SIZE = 64


def _random_finetuned(seed: int) -> EmbedderNet:
    torch.manual_seed(seed)
    net = EmbedderNet(backbone.build("lite0", pretrained=False), dim=8)
    for m in net.modules():  # non-trivial BN statistics, so folding them is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[EmbedderNet, Path]:
    net = _random_finetuned(0)
    path = tmp_path_factory.mktemp("ft") / "embedder.onnx"
    export_embedder(net, SIZE, 8, path, metadata=embedder_metadata({"steps": 1}, SIZE, 8))
    return net, path


def _pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.slow
def test_finetuned_from_onnx_reproduces_the_graph(exported: tuple[EmbedderNet, Path]) -> None:
    net, path = exported
    rebuilt = finetuned_from_onnx(path)
    x = to_input(_pixels(3))
    with torch.no_grad():
        a, b = net(x), rebuilt(x)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert shared_prefix(rebuilt, net.trunk) >= 0  # the same weights: every block agrees


@pytest.mark.slow
def test_a_graph_without_projection_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "frozen.onnx"
    export_embedder(
        PooledNet(backbone.build("lite0", pretrained=False)),
        SIZE,
        1280,
        path,
        metadata=embedder_metadata({"steps": 0}, SIZE, 1280),
    )
    with pytest.raises(ValueError, match="not a fine-tuned embedder"):
        finetuned_from_onnx(path)


@pytest.mark.slow
@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_combined_cosine_is_the_weighted_sum_of_its_parts(w: float) -> None:
    ft, im = _random_finetuned(1), _random_finetuned(2).trunk
    net = CombinedNet(ft, im, w).eval()
    x = to_input(_pixels(4, seed=3))
    with torch.no_grad():
        out = net(x)
        a = ft(x)
        b = F.normalize(im.forward_pool(x), dim=1)
    assert out.shape == (4, 8 + 1280)
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    want = (1 - w) * (a @ a.T) + w * (b @ b.T)
    assert torch.allclose(out @ out.T, want, atol=1e-5)


@pytest.mark.slow
def test_shared_blocks_change_nothing_when_the_trunks_agree() -> None:
    ft = _random_finetuned(4)
    im = _random_finetuned(4).trunk  # same seed: identical weights
    x = to_input(_pixels(2, seed=5))
    with torch.no_grad():
        full, shared = CombinedNet(ft, im, 0.5)(x), CombinedNet(ft, im, 0.5, shared_upto=4)(x)
    assert torch.allclose(full, shared, atol=1e-6)


@pytest.mark.parametrize("w", [-0.1, 1.5])
def test_w_out_of_range_is_refused(w: float) -> None:
    with pytest.raises(ValueError, match="w must be in"):
        CombinedNet(None, None, w)  # type: ignore[arg-type]  # checked before the trunks are used


def test_cli_missing_model_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--finetuned", str(tmp_path / "none.onnx"), "--w", "0.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m export.combined: error:") and "\n" not in err


@pytest.mark.slow
def test_combined_onnx_keeps_the_embedder_contract(tmp_path: Path, exported: tuple[EmbedderNet, Path]) -> None:
    _, path = exported
    ft = finetuned_from_onnx(path)
    net = CombinedNet(ft, backbone.build("lite0", pretrained=False).eval(), 0.4)
    meta = combined_metadata({"name": "x", "version": "1.0.0"}, SIZE, net.dim, 0.4, -1)
    out = tmp_path / "combined.onnx"
    report = export_embedder(net, SIZE, net.dim, out, metadata=meta, check=_pixels(2))
    assert report["min_cosine"] > 0.99999
    sess = ort_session(out)
    got = sess.run(None, {"crops": _pixels(3)})[0]
    assert got.shape == (3, net.dim) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    props = dict(sess.get_modelmeta().custom_metadata_map)
    assert props["embedding_dim"] == str(net.dim) and props["input_size"] == str(SIZE)
    assert '"imagenet_weight": 0.4' in props["combination"]
