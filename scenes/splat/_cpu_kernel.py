"""A compiled CPU rasteriser back end for the torch backend's no-gradient path (observations).

Numba JIT-compiles these loops on first use (a few seconds; cached on disk afterwards). Binning
is a counting sort of depth-ordered Gaussians into pixel tiles; compositing runs gsplat's
per-pixel front-to-back loop over each tile's Gaussians, tiles in parallel, with the thresholds
of the autograd path in `render.py`, which it must match (tests hold both to a brute-force
reference). Each tile row first keeps only the Gaussians whose box reaches it, so a pixel looks
at a short list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_KERNELS: dict[str, Any] = {}


def _bin_tiles_kernel() -> Any:
    """The compiled binning pass: a counting sort of depth-ordered Gaussians into pixel tiles."""
    import numba

    @numba.njit(cache=True)
    def bin_tiles(order, means2d, radii, tile, n_tx, n_ty):
        # each Gaussian's tile range, computed once and used by both passes
        box = np.empty((order.shape[0], 4), np.int64)
        counts = np.zeros(n_tx * n_ty, np.int64)
        for k in range(order.shape[0]):
            g = order[k]
            box[k, 0] = min(max(int(np.floor((means2d[g, 0] - radii[g, 0]) / tile)), 0), n_tx - 1)
            box[k, 1] = min(max(int(np.floor((means2d[g, 0] + radii[g, 0]) / tile)), 0), n_tx - 1)
            box[k, 2] = min(max(int(np.floor((means2d[g, 1] - radii[g, 1]) / tile)), 0), n_ty - 1)
            box[k, 3] = min(max(int(np.floor((means2d[g, 1] + radii[g, 1]) / tile)), 0), n_ty - 1)
            for ty in range(box[k, 2], box[k, 3] + 1):
                for tx in range(box[k, 0], box[k, 1] + 1):
                    counts[ty * n_tx + tx] += 1
        starts = np.cumsum(counts) - counts
        fill = starts.copy()
        gauss = np.empty(counts.sum(), np.int64)
        for k in range(order.shape[0]):  # depth order is kept inside every tile
            for ty in range(box[k, 2], box[k, 3] + 1):
                for tx in range(box[k, 0], box[k, 1] + 1):
                    t = ty * n_tx + tx
                    gauss[fill[t]] = order[k]
                    fill[t] += 1
        return starts, counts, gauss

    return bin_tiles


def _composite_kernel() -> Any:
    """The compiled compositing pass: gsplat's per-pixel front-to-back loop, tiles in parallel.
    `limits` = (alpha threshold, alpha cap, transmittance cut-off); writes `out` [H, W, F] and
    `out_alpha` [H, W]."""
    import numba

    @numba.njit(parallel=True, cache=True)
    def composite_tiles(
        starts, counts, gauss, means2d, conics, opac, feats, radii, tile, limits, out, out_alpha
    ):
        alpha_threshold, alpha_max, t_min = limits
        height, width = out_alpha.shape
        n_tx = -(-width // tile)
        n_feat = feats.shape[1]
        for t in numba.prange(starts.shape[0]):
            n = counts[t]
            if n == 0:
                continue
            x0 = (t % n_tx) * tile
            y0 = (t // n_tx) * tile
            a = starts[t]
            acc = np.zeros(n_feat)
            row = np.empty(n, np.int64)
            for py in range(y0, min(y0 + tile, height)):
                cy = py + 0.5
                m = 0
                for i in range(a, a + n):  # Gaussians whose box reaches this row, in depth order
                    g = gauss[i]
                    if abs(means2d[g, 1] - cy) <= radii[g, 1] + 0.5:
                        row[m] = g
                        m += 1
                for px in range(x0, min(x0 + tile, width)):
                    cx = px + 0.5
                    T = 1.0
                    acc[:] = 0.0
                    for j in range(m):
                        g = row[j]
                        dx = means2d[g, 0] - cx
                        if abs(dx) > radii[g, 0] + 0.5:  # outside its box alpha is below threshold
                            continue
                        dy = means2d[g, 1] - cy
                        sigma = (
                            0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
                        )
                        if sigma < 0.0:
                            continue
                        alpha = min(alpha_max, opac[g] * np.exp(-sigma))
                        if alpha < alpha_threshold:
                            continue
                        next_T = T * (1.0 - alpha)
                        if next_T <= t_min:
                            break
                        w = alpha * T
                        for f in range(n_feat):
                            acc[f] += w * feats[g, f]
                        T = next_T
                    for f in range(n_feat):
                        out[py, px, f] = acc[f]
                    out_alpha[py, px] = 1.0 - T

    return composite_tiles


def rasterize_camera(
    order: np.ndarray,
    means2d: np.ndarray,
    conics: np.ndarray,
    opac: np.ndarray,
    feats: np.ndarray,
    radii: np.ndarray,
    width: int,
    height: int,
    tile: int,
    alpha_threshold: float,
    alpha_max: float,
    t_min: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One camera. `order`: indices of the visible Gaussians sorted front to back. Arrays float64
    except `radii` (float64 too, integral values). Returns features [H, W, F] and alpha [H, W]."""
    if not _KERNELS:
        _KERNELS.update(bin=_bin_tiles_kernel(), composite=_composite_kernel())
    n_tx, n_ty = -(-width // tile), -(-height // tile)
    starts, counts, gauss = _KERNELS["bin"](order, means2d, radii, tile, n_tx, n_ty)
    out = np.zeros((height, width, feats.shape[1]), dtype=np.float64)
    out_alpha = np.zeros((height, width), dtype=np.float64)
    limits = (alpha_threshold, alpha_max, t_min)
    _KERNELS["composite"](
        starts, counts, gauss, means2d, conics, opac, feats, radii, tile, limits, out, out_alpha
    )
    return out, out_alpha
