"""Constant-velocity Kalman filter on boxes, vectorised over tracks.

State per track: ``[cx, cy, w, h, vcx, vcy, vw, vh]`` in source pixels (and pixels per frame).
The measurement is ``[cx, cy, w, h]``. Noise scales with the box size (as in SORT/ByteTrack/BoT-SORT):
a big box near the camera moves more pixels per frame than a small one far away, so a fixed noise
would be wrong for one of them. Widths and heights are floored at one pixel in the noise terms so a
degenerate box never makes the innovation covariance singular.

Everything is a plain function of arrays (no hidden state): the tracker owns the arrays.
"""

from __future__ import annotations

import numpy as np

NDIM = 4
# Share of the box size used as position / velocity standard deviation (ByteTrack's values).
STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160

_F = np.eye(2 * NDIM)
_F[:NDIM, NDIM:] = np.eye(NDIM)  # x' = x + v (one frame per step)


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """[N, 4] xyxy -> [N, 4] float64 (cx, cy, w, h)."""
    b = np.asarray(xyxy, np.float64)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate([b[:, :2] + wh / 2, wh], axis=1)


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """[N, 4] (cx, cy, w, h) -> [N, 4] float32 xyxy; negative sizes (a shrinking prediction) become 0."""
    c = cxcywh[:, :2]
    half = np.maximum(cxcywh[:, 2:4], 0.0) / 2
    return np.concatenate([c - half, c + half], axis=1).astype(np.float32)


def _size_std(wh: np.ndarray, weight: float) -> np.ndarray:
    """[N, 2] sizes -> [N, 4] standard deviations for (x, y, w, h)-like quantities."""
    wh = np.maximum(wh, 1.0) * weight
    return np.concatenate([wh, wh], axis=1)


def initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start tracks from [N, 4] (cx, cy, w, h): mean [N, 8] with zero velocity, covariance [N, 8, 8]."""
    z = np.asarray(measurement, np.float64)
    n = z.shape[0]
    mean = np.concatenate([z, np.zeros((n, NDIM))], axis=1)
    # Velocity is unknown at birth: start it very uncertain so the first matches set it.
    std = np.concatenate([2 * _size_std(z[:, 2:], STD_POSITION), 10 * _size_std(z[:, 2:], STD_VELOCITY)], axis=1)
    cov = np.zeros((n, 2 * NDIM, 2 * NDIM))
    idx = np.arange(2 * NDIM)
    cov[:, idx, idx] = std**2
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead for every track. Returns new arrays; the inputs are not modified."""
    if mean.shape[0] == 0:
        return mean.copy(), cov.copy()
    wh = mean[:, 2:4]
    std = np.concatenate([_size_std(wh, STD_POSITION), _size_std(wh, STD_VELOCITY)], axis=1)
    new_mean = mean @ _F.T
    new_cov = _F @ cov @ _F.T
    idx = np.arange(2 * NDIM)
    new_cov[:, idx, idx] += std**2
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct [K] tracks with [K, 4] (cx, cy, w, h) measurements. Returns new arrays."""
    if mean.shape[0] == 0:
        return mean.copy(), cov.copy()
    z = np.asarray(measurement, np.float64)
    r = _size_std(mean[:, 2:4], STD_POSITION) ** 2
    # H = [I 0], so H P H^T and P H^T are slices of P (no matrix products with H).
    s = cov[:, :NDIM, :NDIM].copy()
    idx = np.arange(NDIM)
    s[:, idx, idx] += r
    # K = P H^T S^-1  <=>  K^T = S^-1 H P (S and P symmetric); solve instead of inverting.
    gain = np.linalg.solve(s, cov[:, :NDIM, :]).transpose(0, 2, 1)
    innovation = z - mean[:, :NDIM]
    new_mean = mean + np.einsum("kij,kj->ki", gain, innovation)
    new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
    return new_mean, new_cov
