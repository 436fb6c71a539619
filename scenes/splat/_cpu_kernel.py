"""A compiled CPU compositor for the torch backend's no-gradient path (rendering observations).

Numba JIT-compiles `composite_tiles` on first use (a few seconds, cached on disk afterwards); it
runs gsplat's per-pixel front-to-back loop over each tile's depth-sorted Gaussians, tiles in
parallel, with the same thresholds as the autograd path in `render.py`, which it must match.
"""

from __future__ import annotations

import numpy as np

_KERNEL = None


def _build():
    import numba

    @numba.njit(parallel=True, cache=True, fastmath=False)
    def composite_tiles(tile_start, tile_end, tile_ids, gauss, means2d, conics, opac, feats, radii, n_tiles_x,
                        tile, width, height, alpha_threshold, alpha_max, t_min, out, out_alpha):
        n = tile_ids.shape[0]
        n_feat = feats.shape[1]
        for k in numba.prange(n):
            t = tile_ids[k]
            x0 = (t % n_tiles_x) * tile
            y0 = (t // n_tiles_x) * tile
            a, b = tile_start[k], tile_end[k]
            acc = np.zeros(n_feat)
            for py in range(y0, min(y0 + tile, height)):
                for px in range(x0, min(x0 + tile, width)):
                    cx = px + 0.5
                    cy = py + 0.5
                    T = 1.0
                    acc[:] = 0.0
                    for i in range(a, b):
                        g = gauss[i]
                        dx = means2d[g, 0] - cx
                        dy = means2d[g, 1] - cy
                        # outside the Gaussian's bounding box alpha is below the threshold anyway
                        if abs(dx) > radii[g, 0] + 0.5 or abs(dy) > radii[g, 1] + 0.5:
                            continue
                        sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
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


def composite(tile_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, gauss: np.ndarray, means2d: np.ndarray,
              conics: np.ndarray, opac: np.ndarray, feats: np.ndarray, radii: np.ndarray, n_tiles_x: int, tile: int, width: int,
              height: int, alpha_threshold: float, alpha_max: float, t_min: float) -> tuple[np.ndarray, np.ndarray]:
    """One camera. tile_ids [K] with their pair ranges [starts, ends) into `gauss` (depth-sorted
    Gaussian indices). Returns features [H, W, F] and alpha [H, W]."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    out = np.zeros((height, width, feats.shape[1]), dtype=np.float64)
    out_alpha = np.zeros((height, width), dtype=np.float64)
    _KERNEL(starts, ends, tile_ids, gauss, means2d, conics, opac, feats, radii, n_tiles_x, tile, width, height,
            alpha_threshold, alpha_max, t_min, out, out_alpha)
    return out, out_alpha
