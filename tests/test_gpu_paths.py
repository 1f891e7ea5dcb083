"""The GPU code paths, checked where they run on the CPU too: IO binding, TensorRT provider options,
batched segmentation, fp16 copies and the catalog's GPU index (its GPU branch is `-m gpu`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

from stream.config import CatalogConfig, load_config
from stream.config import replace as config_replace
from stream.stages.catalog import Catalog
from stream.stages.embed import Embedder
from stream.stages.onnx_model import BoundRunner, LoadedModel, device_of, load_model, provider_options
from stream.stages.segment import Segmenter
from stream.synthetic.scene import CheckoutScene


@pytest.fixture(scope="module")
def seg_model() -> LoadedModel:
    return load_model(config_replace(load_config().segment.model, provider="cpu"))


@pytest.fixture(scope="module")
def emb_model() -> LoadedModel:
    return load_model(config_replace(load_config().classify.model, provider="cpu"))


def _frames(n: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    scene = CheckoutScene(seed=5)
    frames = [scene.render(60 + 25 * i).image for i in range(n)]
    return [cv2.resize(f, size) for f in frames] if size else frames


# --- provider options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "fp16"), [("TensorrtExecutionProvider", True), ("TensorrtExecutionProvider", False)]
)
def test_tensorrt_options_keep_engine_and_timing_caches(tmp_path: Path, provider: str, fp16: bool) -> None:
    cache = tmp_path / "trt" / "nested"
    cfg = config_replace(load_config().segment.model, trt_cache_dir=str(cache), fp16=fp16)
    assert provider_options(provider, cfg) == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": fp16,
    }
    assert cache.is_dir()  # created, so the first start can write its engine


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "CPUExecutionProvider"])
def test_other_providers_take_no_options(provider: str) -> None:
    assert provider_options(provider, load_config().segment.model) == {}


@pytest.mark.parametrize(
    ("provider", "device"),
    [("TensorrtExecutionProvider", "cuda"), ("CUDAExecutionProvider", "cuda"), ("CPUExecutionProvider", "cpu")],
)
def test_device_of(provider: str, device: str) -> None:
    assert device_of(provider) == device


# --- IO binding -------------------------------------------------------------------------------------


def test_cpu_provider_runs_unbound(seg_model: LoadedModel) -> None:
    assert seg_model.provider == "CPUExecutionProvider" and not seg_model.io_binding


def test_bound_runner_rejects_unknown_device(seg_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        BoundRunner(seg_model.session, "tpu")


@pytest.mark.parametrize("n", [1, 3, 1])  # 3 then 1 again: the device buffer is re-made on a new shape
def test_bound_segmenter_equals_plain_run(seg_model: LoadedModel, n: int) -> None:
    batch = np.stack(_frames(n, (256, 192)))
    plain = seg_model.session.run(["classes", "confidence"], {"images": batch})
    bound = dataclasses.replace(seg_model, io_binding=True)
    for _ in range(2):  # the second call reuses the input buffer in place
        got = bound.run(["classes", "confidence"], {"images": batch})
        for a, b in zip(plain, got, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_bound_run_fetches_only_what_is_asked(seg_model: LoadedModel) -> None:
    batch = np.stack(_frames(2, (256, 192)))
    bound = dataclasses.replace(seg_model, io_binding=True)
    (classes,) = bound.run(["classes"], {"images": batch})
    assert np.array_equal(classes, seg_model.session.run(["classes"], {"images": batch})[0])


def test_bound_results_outlive_the_next_call(seg_model: LoadedModel) -> None:
    bound = dataclasses.replace(seg_model, io_binding=True)
    a, b = (np.stack(_frames(1, (256, 192))), np.zeros((1, 192, 256, 3), np.uint8))
    first = bound.run(["confidence"], {"images": a})[0]
    kept = first.copy()
    bound.run(["confidence"], {"images": b})
    assert np.array_equal(first, kept)


def test_bound_embedder_equals_plain(emb_model: LoadedModel) -> None:
    crops = [f[100:300, 200:420] for f in _frames(3)]
    plain = Embedder(load_config().classify.model, model=emb_model).embed(crops)
    bound = Embedder(load_config().classify.model, model=dataclasses.replace(emb_model, io_binding=True))
    assert np.array_equal(plain, bound.embed(crops))


# --- segmentation batched across lanes --------------------------------------------------------------


def test_segment_batch_empty(seg_model: LoadedModel) -> None:
    assert Segmenter(load_config().segment, model=seg_model).segment_batch([]) == []


@pytest.mark.parametrize("bound", [False, True])
def test_segment_batch_equals_single_calls(seg_model: LoadedModel, bound: bool) -> None:
    model = dataclasses.replace(seg_model, io_binding=bound)
    seg = Segmenter(load_config().segment, model=model)
    frames = _frames(4)
    frames[1] = cv2.resize(frames[1], (1920, 1080))  # lanes may differ in resolution
    batched = seg.segment_batch(frames)
    for frame, got in zip(frames, batched, strict=True):
        one = seg.segment(frame)
        assert np.array_equal(one.classes, got.classes)
        np.testing.assert_allclose(one.confidence, got.confidence, atol=1e-5)  # batch may change the kernel
        assert got.source_size == (frame.shape[1], frame.shape[0])


# --- fp16 copies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["segmenter", "embedder"])
def test_fp16_copy_within_tolerance(tmp_path: Path, name: str) -> None:
    onnx = pytest.importorskip("onnx")
    from export import fp16  # noqa: PLC0415  (the export extra)
    from stream.stages.onnx_model import resolve_model  # noqa: PLC0415

    src = resolve_model(f"builtin:{name}")
    dst = fp16.convert(src, tmp_path / f"{name}.fp16.onnx")
    report = fp16.compare(src, dst)
    assert report["ok"], report
    meta = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert meta["precision"] == "fp16" and len(meta["fp16_of"]) == 64
    assert dst.stat().st_size < 0.6 * src.stat().st_size  # the weights really are half precision
    cfg = config_replace(load_config().segment.model, path=str(dst), provider="cpu", verify_checksum=False)
    model = load_model(cfg)  # the runtime's contract checks accept it unchanged
    if name == "segmenter":
        assert Segmenter(load_config().segment, model=model).input_size == (192, 256)
    else:
        assert Embedder(cfg, model=model).dim == int(meta["embedding_dim"])


# --- catalog GPU index ------------------------------------------------------------------------------


class _Embedder:
    dim = 32
    identity = {"name": "fake", "version": "1", "sha256": "0" * 64}

    def embed(self, crops):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


def _catalog(use_gpu: bool, n: int = 500) -> tuple[Catalog, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cat = Catalog(
        CatalogConfig(index="flat", use_gpu=use_gpu, blas_threshold=20, item_views=False),
        _Embedder.identity,
        32,
        "flat",
    )
    cat._append(vecs, [f"p{i % 50}" for i in range(n)], [f"img{i}.jpg" for i in range(n)])
    return cat, vecs


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="faiss has GPUs here: the GPU test covers this")
def test_catalog_stays_on_cpu_without_faiss_gpus() -> None:
    gpu_wanted, vecs = _catalog(use_gpu=True)
    cpu, _ = _catalog(use_gpu=False)
    queries = vecs[:40] + 0.01
    assert [m.products for m in gpu_wanted.search(queries, 3)] == [m.products for m in cpu.search(queries, 3)]
    assert gpu_wanted.info()["gpu"] is False


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss has no GPUs here (faiss-cpu or no CUDA device)")
def test_catalog_gpu_index_gives_the_cpu_top1() -> None:
    gpu, vecs = _catalog(use_gpu=True, n=25_000)
    cpu, _ = _catalog(use_gpu=False, n=25_000)
    queries = vecs[::97] + 0.01
    got, want = gpu.search(queries, 1), cpu.search(queries, 1)
    assert gpu.info()["gpu"] is True
    assert [m.products[0] for m in got] == [m.products[0] for m in want]
