"""GPU providers give the CPU provider's answers (skipped where onnxruntime has no CUDA provider)."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from stream.config import load_config
from stream.config import replace as config_replace
from stream.stages.onnx_model import load_model
from stream.synthetic.scene import CheckoutScene

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="onnxruntime has no CUDA provider here (install the gpu extra on an NVIDIA box)",
    ),
]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_segmenter_matches_cpu(provider):
    cfg = load_config().segment.model
    cpu = load_model(config_replace(cfg, provider="cpu"))
    gpu = load_model(config_replace(cfg, provider=provider))
    assert gpu.provider != "CPUExecutionProvider"
    h, w = cpu.meta_json("input_size")
    image = cv2.resize(CheckoutScene(seed=5).render(120).image, (w, h))[None]
    name = cpu.session.get_inputs()[0].name
    c_cls, _ = cpu.session.run(None, {name: image})
    g_cls, _ = gpu.session.run(None, {name: image})
    assert (c_cls == g_cls).mean() >= 0.995


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_embedder_matches_cpu(provider):
    cfg = load_config().classify.model
    cpu = load_model(config_replace(cfg, provider="cpu"))
    gpu = load_model(config_replace(cfg, provider=provider))
    s = cpu.meta_json("input_size")
    crops = np.random.default_rng(0).integers(0, 255, (4, s, s, 3), dtype=np.uint8)
    name = cpu.session.get_inputs()[0].name
    a = cpu.session.run(None, {name: crops})[0]
    b = gpu.session.run(None, {name: crops})[0]
    assert np.min(np.sum(a * b, axis=1)) >= 0.999  # fp16 TensorRT kernels: cosine, not bit equality
