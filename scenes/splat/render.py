"""Gaussian-splat rasterisation: one functional entry point, two backends.

    renders, alphas, depths = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H)

- `backend="gsplat"`: `gsplat.rasterization` (CUDA).
- `backend="torch"`: a pure-torch implementation written here for CPU. It follows gsplat's EWA
  3DGS model exactly (same Jacobian clamping, eps2d blur, opacity-aware bounding boxes,
  alpha threshold 1/255, alpha cap 0.999, transmittance cut-off 1e-4) so the two agree, and
  gradients flow to every Gaussian parameter and to the camera pose through autograd.
- `backend="auto"`: gsplat when the tensors are on CUDA, torch otherwise.

The torch backend bins Gaussians into square pixel tiles and lays the (tile, Gaussian) pairs out
in depth order. With gradients, it composites every pair against its tile's pixels with a
segmented cumulative product — dense, vectorised autograd work. Without gradients (rendering
observations), a compiled per-pixel loop (`_cpu_kernel.py`, numba) composites the same pairs
with early termination, several times faster. Tests hold both to a brute-force reference.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from common.errors import SpecError

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EXTEND = 3.33

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] wxyz (normalised here) -> [..., 3, 3]"""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Real spherical harmonics up to `degree` (0-3), as in 3DGS.

    dirs: [..., 3] (normalised here); coeffs: [..., K, 3] with K >= (degree + 1)^2. Returns [..., 3].
    """
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = SH_C0 * coeffs[..., 0, :]
    if degree >= 1:
        out = (
            out
            - SH_C1 * y * coeffs[..., 1, :]
            + SH_C1 * z * coeffs[..., 2, :]
            - SH_C1 * x * coeffs[..., 3, :]
        )
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out = (
            out
            + SH_C2[0] * xy * coeffs[..., 4, :]
            + SH_C2[1] * yz * coeffs[..., 5, :]
            + SH_C2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :]
            + SH_C2[3] * xz * coeffs[..., 7, :]
            + SH_C2[4] * (xx - yy) * coeffs[..., 8, :]
        )
    if degree >= 3:
        out = (
            out
            + SH_C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :]
            + SH_C3[1] * xy * z * coeffs[..., 10, :]
            + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
            + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :]
            + SH_C3[5] * z * (xx - yy) * coeffs[..., 14, :]
            + SH_C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :]
        )
    return out


def project(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection. Returns means2d [C, N, 2], conics [C, N, 3] (a, b, c of the inverse 2-D
    covariance), depths [C, N] and integer radii [C, N, 2] (0 = culled)."""
    M = quat_to_rotmat(quats) * scales[..., None, :]  # [N, 3, 3], covariance = M M^T
    Rv, tv = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mc = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # [C, N, 3]
    tx, ty, tz = mc.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    jx = tz * torch.minimum(torch.maximum(tx / tz, -lim_xn), lim_xp)
    jy = tz * torch.minimum(torch.maximum(ty / tz, -lim_yn), lim_yp)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * jx / tz**2, zero, fy / tz, -fy * jy / tz**2], -1).reshape(
        tz.shape + (2, 3)
    )
    # 2-D covariance J Rv M (J Rv M)^T: one [2, 3] x [3, 3] product per Gaussian, no 3x3x3 chains
    A = (J @ Rv[:, None]) @ M[None]  # [C, N, 2, 3]
    cov2 = A @ A.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)
    det = cov2[..., 0, 0] * cov2[..., 1, 1] - cov2[..., 0, 1] * cov2[..., 1, 0]
    det_safe = det.clamp_min(1e-10)
    conics = torch.stack(
        [cov2[..., 1, 1] / det_safe, -cov2[..., 0, 1] / det_safe, cov2[..., 0, 0] / det_safe], -1
    )
    with torch.no_grad():
        op = opacities.detach()[None].expand_as(tz)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(
            EXTEND
        )
        rx = torch.ceil(extend * cov2[..., 0, 0].detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * cov2[..., 1, 1].detach().clamp_min(0).sqrt())
        m2 = means2d.detach()
        valid = (
            (det.detach() > 0)
            & (tz.detach() > near)
            & (tz.detach() < far)
            & (op >= ALPHA_THRESHOLD)
            & ((rx > 0) | (ry > 0))
            & (m2[..., 0] + rx > 0)
            & (m2[..., 0] - rx < width)
            & (m2[..., 1] + ry > 0)
            & (m2[..., 1] - ry < height)
        )
        radii = torch.stack([rx, ry], -1) * valid[..., None]
    return means2d, conics, tz, radii.int()


def _bin_pairs(
    means2d: Tensor, depths: Tensor, radii: Tensor, width: int, height: int, tile: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(tile, Gaussian) pairs, sorted by global tile id (camera-major) and by depth within a tile.
    Returns tile_id [P], camera [P], Gaussian index [P]."""
    dev = means2d.device
    tx_n, ty_n = math.ceil(width / tile), math.ceil(height / tile)
    with torch.no_grad():
        cam, gid = torch.nonzero((radii > 0).any(-1), as_tuple=True)
        if len(gid) > 0:
            m = means2d.detach()[cam, gid]
            r = radii[cam, gid].to(m.dtype)
            x0 = ((m[:, 0] - r[:, 0]) / tile).floor().clamp(0, tx_n - 1).long()
            x1 = ((m[:, 0] + r[:, 0]) / tile).floor().clamp(0, tx_n - 1).long()
            y0 = ((m[:, 1] - r[:, 1]) / tile).floor().clamp(0, ty_n - 1).long()
            y1 = ((m[:, 1] + r[:, 1]) / tile).floor().clamp(0, ty_n - 1).long()
            nx, ny = x1 - x0 + 1, y1 - y0 + 1
            counts = nx * ny
            # depth order first, then a stable sort by tile keeps depth order inside each tile
            order = torch.argsort(depths.detach()[cam, gid], stable=True)
            rep = torch.repeat_interleave(order, counts[order])
            starts = torch.cumsum(counts[order], 0) - counts[order]
            local = torch.arange(len(rep), device=dev) - torch.repeat_interleave(starts, counts[order])
            px = x0[rep] + local % nx[rep]
            py = y0[rep] + local // nx[rep]
            tile_id = cam[rep] * (tx_n * ty_n) + py * tx_n + px
            tile_id, perm = torch.sort(tile_id, stable=True)
            pair = rep[perm]  # index into (cam, gid)
            pc, pg = cam[pair], gid[pair]
        else:
            tile_id = pc = pg = torch.zeros(0, dtype=torch.long, device=dev)
    return tile_id, pc, pg


def _composite_torch(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    depths: Tensor,  # [C, N]
    radii: Tensor,  # [C, N, 2]
    opacities: Tensor,  # [N]
    feats: Tensor,  # [C, N, F] colours (+ depth channel)
    width: int,
    height: int,
    tile: int,
    pair_budget: int,
) -> tuple[Tensor, Tensor]:
    """Tile-binned front-to-back compositing. Returns features [C, H, W, F] and alpha [C, H, W, 1]."""
    C, N, F = feats.shape
    dev, dt = feats.device, feats.dtype
    tx_n, ty_n = math.ceil(width / tile), math.ceil(height / tile)
    n_tiles = C * tx_n * ty_n
    out_f = torch.zeros(n_tiles, tile * tile, F, dtype=dt, device=dev)
    out_a = torch.zeros(n_tiles, tile * tile, dtype=dt, device=dev)

    tile_id, pc, pg = _bin_pairs(means2d, depths, radii, width, height, tile)

    if len(tile_id) == 0:
        return _untile(out_f, C, tx_n, ty_n, tile, width, height), _untile(
            out_a[..., None], C, tx_n, ty_n, tile, width, height
        )

    # pixel centres of one tile, [P, 2]
    ar = torch.arange(tile, device=dev, dtype=dt)
    local_xy = torch.stack(torch.meshgrid(ar, ar, indexing="xy"), -1).reshape(-1, 2) + 0.5

    res_f, res_a, res_ids = [], [], []
    edges = _chunk_edges(tile_id, max(1, pair_budget // (tile * tile)))
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        tid, c, g = tile_id[a:b], pc[a:b], pg[a:b]
        t_local = tid % (tx_n * ty_n)
        origin = torch.stack([(t_local % tx_n) * tile, (t_local // tx_n) * tile], -1).to(dt)
        d = means2d[c, g][:, None, :] - (origin[:, None, :] + local_xy[None])  # [P, T, 2]
        w = _pair_weights(tid, d, conics[c, g], opacities[g], dt)  # [P, T]
        uniq, inv = torch.unique_consecutive(tid, return_inverse=True)
        acc_f = torch.zeros(len(uniq), tile * tile, F, dtype=dt, device=dev)
        acc_f = acc_f.index_add(0, inv, w[..., None] * feats[c, g][:, None, :])
        acc_a = torch.zeros(len(uniq), tile * tile, dtype=dt, device=dev).index_add(0, inv, w)
        res_f.append(acc_f)
        res_a.append(acc_a)
        res_ids.append(uniq)
    ids = torch.cat(res_ids)
    out_f = out_f.index_copy(0, ids, torch.cat(res_f))
    out_a = out_a.index_copy(0, ids, torch.cat(res_a))
    return (
        _untile(out_f, C, tx_n, ty_n, tile, width, height),
        _untile(out_a[..., None], C, tx_n, ty_n, tile, width, height),
    )


def _chunk_edges(tile_id: Tensor, per_chunk: int) -> list[int]:
    """Pair-index edges of chunks of about `per_chunk` pairs that end on tile boundaries, so each
    tile's segment is composited whole. `tile_id` [P] is sorted."""
    bounds = torch.nonzero(tile_id[1:] != tile_id[:-1]).flatten() + 1
    seg_starts = torch.cat([torch.zeros(1, dtype=torch.long, device=tile_id.device), bounds])
    seg_ends = torch.cat([bounds, torch.tensor([len(tile_id)], device=tile_id.device)])
    edges = [0]
    for s, e in zip(seg_starts.tolist(), seg_ends.tolist(), strict=True):
        if e - edges[-1] > per_chunk and s > edges[-1]:
            edges.append(s)
    edges.append(len(tile_id))
    return edges


def _pair_weights(tid: Tensor, d: Tensor, con: Tensor, opac: Tensor, dtype: torch.dtype) -> Tensor:
    """Front-to-back compositing weights alpha * T [P, T] (in `dtype`) of (tile, Gaussian) pairs
    against their tile's pixels: `tid` [P] tile ids (depth-sorted within a tile), `d` [P, T, 2]
    mean - pixel centre, `con` [P, 3] conics, `opac` [P] opacities."""
    sigma = (
        0.5 * (con[:, None, 0] * d[..., 0] ** 2 + con[:, None, 2] * d[..., 1] ** 2)
        + con[:, None, 1] * d[..., 0] * d[..., 1]
    )
    alpha = torch.clamp_max(opac[:, None] * torch.exp(-sigma), ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    # segmented exclusive cumulative product of (1 - alpha), in float64 for long segments
    log1m = torch.log1p(-alpha).double()
    cum = torch.cumsum(log1m, 0)
    seg_first = torch.ones_like(tid, dtype=torch.bool)
    seg_first[1:] = tid[1:] != tid[:-1]
    first_idx = torch.cummax(torch.where(seg_first, torch.arange(len(tid), device=tid.device), 0), 0).values
    base = (cum - log1m)[first_idx]
    T_before = torch.exp(cum - log1m - base).to(dtype)
    T_after = T_before * (1 - alpha)
    keep = T_after > T_MIN  # gsplat stops a pixel before the Gaussian that would cross 1e-4
    return torch.where(keep, alpha * T_before, torch.zeros_like(T_before))


def _composite_cpu_kernel(
    means2d: Tensor,
    conics: Tensor,
    depths: Tensor,
    radii: Tensor,
    opacities: Tensor,
    feats: Tensor,
    width: int,
    height: int,
    tile: int,
) -> tuple[Tensor, Tensor]:
    """The same compositing through the compiled per-pixel loop (no autograd)."""
    from scenes.splat._cpu_kernel import rasterize_camera

    outs, alphas = [], []
    f64 = lambda t: np.ascontiguousarray(t.detach().to(torch.float64).cpu().numpy())  # noqa: E731
    opac = f64(opacities)
    for c in range(feats.shape[0]):
        visible = torch.nonzero((radii[c] > 0).any(-1)).flatten()
        order = visible[torch.argsort(depths[c, visible].detach(), stable=True)].numpy()
        o, a = rasterize_camera(
            order,
            f64(means2d[c]),
            f64(conics[c]),
            opac,
            f64(feats[c]),
            f64(radii[c]),
            width,
            height,
            tile,
            ALPHA_THRESHOLD,
            ALPHA_MAX,
            T_MIN,
        )
        outs.append(torch.from_numpy(o))
        alphas.append(torch.from_numpy(a)[..., None])
    return torch.stack(outs).to(feats.dtype), torch.stack(alphas).to(feats.dtype)


def _cpu_kernel_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _untile(x: Tensor, C: int, tx_n: int, ty_n: int, tile: int, width: int, height: int) -> Tensor:
    """[C*ty*tx, tile*tile, F] -> [C, H, W, F]"""
    F = x.shape[-1]
    x = (
        x.reshape(C, ty_n, tx_n, tile, tile, F)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(C, ty_n * tile, tx_n * tile, F)
    )
    return x[:, :height, :width]


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height) -> None:
    n = means.shape[0]
    checks = [
        (means.ndim == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}"),
        (quats.shape == (n, 4), f"quats must be [N, 4], got {tuple(quats.shape)}"),
        (scales.shape == (n, 3), f"scales must be [N, 3], got {tuple(scales.shape)}"),
        (opacities.shape == (n,), f"opacities must be [N], got {tuple(opacities.shape)}"),
        (
            colors.shape[0] == n and colors.shape[-1] == 3 and colors.ndim in (2, 3),
            f"colors must be [N, 3] or [N, K, 3], got {tuple(colors.shape)}",
        ),
        (
            viewmats.ndim == 3 and viewmats.shape[1:] == (4, 4),
            f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}",
        ),
        (Ks.shape == (viewmats.shape[0], 3, 3), f"Ks must be [C, 3, 3], got {tuple(Ks.shape)}"),
        (width > 0 and height > 0, f"image size must be positive, got {width}x{height}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise SpecError(f"rasterize: {msg}")
    for name, t in (
        ("means", means),
        ("quats", quats),
        ("scales", scales),
        ("opacities", opacities),
        ("colors", colors),
    ):
        if not torch.isfinite(t).all():
            raise SpecError(f"rasterize: {name} contains NaN/inf")


def rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3] linear standard deviations
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, 3] RGB, or [N, K, 3] SH coefficients with sh_degree set
    viewmats: Tensor,  # [C, 4, 4] world-to-camera (OpenCV: x right, y down, z forward)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,  # [C, 3]
    backend: Literal["auto", "torch", "gsplat"] = "auto",
    tile_size: int = 4,
    pair_budget: int = 1 << 22,
    cpu_kernel: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render C cameras. Returns renders [C, H, W, 3], alphas [C, H, W, 1], depths [C, H, W, 1]
    (expected depth: alpha-weighted mean camera z, 0 where nothing was drawn).

    On the torch backend, a render that needs no gradient runs the compiled per-pixel compositor
    (`cpu_kernel=None` chooses it automatically; True/False force it); with gradients the
    autograd path composites (tile, Gaussian) pairs densely.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat":
        out, alphas = _gsplat_rasterization(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            near_plane=near,
            far_plane=far,
            eps2d=eps2d,
            sh_degree=sh_degree,
        )
        depth = out[..., 3:4]  # gsplat's "ED" channel is already the expected depth
    elif backend == "torch":
        means2d, conics, depths, radii = project(
            means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far
        )
        feats = torch.cat([_colors(means, colors, viewmats, sh_degree), depths[..., None]], -1)
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (means, quats, scales, opacities, colors, viewmats, Ks)
        )
        if cpu_kernel is None:
            cpu_kernel = not needs_grad and not means.is_cuda and _cpu_kernel_available()
        if cpu_kernel:
            out, alphas = _composite_cpu_kernel(
                means2d, conics, depths, radii, opacities, feats, width, height, 8
            )
        else:
            out, alphas = _composite_torch(
                means2d, conics, depths, radii, opacities, feats, width, height, tile_size, pair_budget
            )
        depth = out[..., 3:4] / alphas.clamp_min(1e-10)
    else:
        raise SpecError(f"rasterize: unknown backend {backend!r}; choose auto, torch or gsplat")
    renders = out[..., :3]
    if backgrounds is not None:
        renders = renders + (1 - alphas) * backgrounds[:, None, None, :]
    return renders, alphas, depth


def _colors(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    """Per-camera RGB [C, N, 3]: the colours themselves, or their SH evaluated towards each camera."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return colors[None].expand(C, *colors.shape)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None] - campos[:, None]  # [C, N, 3]
    rgb = eval_sh(sh_degree, dirs, colors[None].expand(C, *colors.shape))
    return torch.clamp_min(rgb + 0.5, 0.0)


def _gsplat_rasterization(means: Tensor, *args: Tensor | int, **options: Any) -> tuple[Tensor, Tensor]:
    """`gsplat.rasterization` (CUDA) on rasterize's arguments: RGB + expected depth [C, H, W, 4] and
    alphas [C, H, W, 1]."""
    try:
        import gsplat
    except ImportError:  # pragma: no cover - gsplat is a core dependency
        raise SpecError("rasterize: backend 'gsplat' needs the gsplat package (pip install gsplat)") from None
    if not means.is_cuda:
        raise SpecError("rasterize: backend 'gsplat' needs CUDA tensors; use backend='torch' on CPU")
    renders, alphas, _ = gsplat.rasterization(means, *args, render_mode="RGB+ED", packed=False, **options)
    return renders, alphas
