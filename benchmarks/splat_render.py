"""Splat rasteriser speed on CPU: the torch backend vs the straightforward baseline it replaced.

    python benchmarks/splat_render.py              # ~3 min on 2 cores
    python benchmarks/splat_render.py --quick      # 5k and 20k only
    python benchmarks/splat_render.py --counts 500 --sizes 32 --repeats 1   # a smoke run

Prints a table and writes benchmarks/results/splat_render.json: frames per second at 128² and
256² for 5k, 20k and 100k Gaussians, forward and forward+backward, for
- `torch`: scenes.splat.render.rasterize(backend="torch"): forward alone runs the compiled
  per-pixel compositor; forward+backward runs the autograd path (tile pairs, segmented compositing),
- `torch_autograd`: the autograd path's forward alone (cpu_kernel=False), for comparison,
- `baseline`: a per-tile Python loop that culls Gaussians by bounding box and composites each tile
  densely with cumprod — the first version written, kept here as the yardstick.
The scene: Gaussians spread through a 1 m box 1.5–2.5 m in front of the camera, sized so the box
is covered about twice over, like a reconstructed surface.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from common.results import add_result_arguments, write_result
from scenes.splat.render import ALPHA_MAX, ALPHA_THRESHOLD, project, rasterize

ROOT = Path(__file__).resolve().parents[1]


def make_scene(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    means[:, 2] += 2.0
    quats = torch.randn(n, 4, generator=g)
    scale = 0.6 * (1.0 / n) ** (1 / 2) * 1.0  # ~2x coverage of a 1 m^2 view
    scales = scale * (0.5 + torch.rand(n, 3, generator=g))
    opac = 0.5 + 0.5 * torch.rand(n, generator=g)
    rgb = torch.rand(n, 3, generator=g)
    return means, quats, scales, opac, rgb


def camera(size: int):
    f = 1.1 * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return torch.eye(4)[None], K[None]


def baseline_render(means, quats, scales, opac, rgb, viewmats, Ks, W, H, tile=16):
    """Straightforward tile-culled dense compositor (one camera)."""
    means2d, conics, depths, radii = project(means, quats, scales, opac, viewmats, Ks, W, H)
    m, con, z, r = means2d[0], conics[0], depths[0], radii[0].float()
    order = torch.argsort(z.detach())
    out = torch.zeros(H, W, 3)
    alpha_img = torch.zeros(H, W, 1)
    rows = []
    for ty in range(math.ceil(H / tile)):
        row = []
        for tx in range(math.ceil(W / tile)):
            x0, y0 = tx * tile, ty * tile
            x1, y1 = min(x0 + tile, W), min(y0 + tile, H)
            sel = order[
                ((r[order] > 0).any(-1))
                & (m[order, 0].detach() + r[order, 0] >= x0)
                & (m[order, 0].detach() - r[order, 0] < x1)
                & (m[order, 1].detach() + r[order, 1] >= y0)
                & (m[order, 1].detach() - r[order, 1] < y1)
            ]
            ys, xs = torch.meshgrid(torch.arange(y0, y1) + 0.5, torch.arange(x0, x1) + 0.5, indexing="ij")
            pix = torch.stack([xs, ys], -1).reshape(-1, 2)
            if len(sel) == 0:
                row.append((torch.zeros(y1 - y0, x1 - x0, 3), torch.zeros(y1 - y0, x1 - x0, 1)))
                continue
            d = m[sel][:, None] - pix[None]
            c = con[sel]
            sig = (
                0.5 * (c[:, None, 0] * d[..., 0] ** 2 + c[:, None, 2] * d[..., 1] ** 2)
                + c[:, None, 1] * d[..., 0] * d[..., 1]
            )
            a = torch.clamp_max(opac[sel][:, None] * torch.exp(-sig), ALPHA_MAX)
            a = torch.where((sig >= 0) & (a >= ALPHA_THRESHOLD), a, torch.zeros_like(a))
            T = torch.cumprod(torch.cat([torch.ones(1, a.shape[1]), 1 - a[:-1]]), 0)
            w = a * T
            col = (w[..., None] * rgb[sel][:, None]).sum(0)
            row.append((col.reshape(y1 - y0, x1 - x0, 3), w.sum(0).reshape(y1 - y0, x1 - x0, 1)))
        rows.append((torch.cat([t[0] for t in row], 1), torch.cat([t[1] for t in row], 1)))
    out = torch.cat([t[0] for t in rows], 0)
    alpha_img = torch.cat([t[1] for t in rows], 0)
    return out[None], alpha_img[None]


def time_fps(fn, backward: bool, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = fn()
        if backward:
            (out[0].sum() + out[1].sum()).backward()
        if i:  # the first call warms caches
            times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def find(rows: list[dict], impl: str, size: int, n: int, p: str) -> dict | None:
    """The measurement of `impl` at (image size, Gaussian count, pass), if it was run."""
    return next(
        (r for r in rows if (r["impl"], r["size"], r["gaussians"], r["pass"]) == (impl, size, n, p)), None
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5k and 20k Gaussians only")
    ap.add_argument("--counts", type=int, nargs="+", help="Gaussian counts (default: 5k, 20k, 100k)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square image sizes")
    ap.add_argument("--repeats", type=int, default=3)
    add_result_arguments(ap, ROOT / "benchmarks/results", "splat_render")
    args = ap.parse_args()
    torch.manual_seed(0)
    counts = args.counts or ([5_000, 20_000] if args.quick else [5_000, 20_000, 100_000])
    rows = []
    for size in args.sizes:
        viewmats, Ks = camera(size)
        for n in counts:
            for impl in ("torch", "torch_autograd", "baseline"):
                for backward in (False, True):
                    if impl == "baseline" and n > 20_000 and backward:
                        continue  # minutes per frame; the point is made by smaller sizes
                    if impl == "torch_autograd" and backward:
                        continue  # that is the "torch" fwd+bwd row
                    scene = [t.clone().requires_grad_(backward) for t in make_scene(n)]
                    if impl == "baseline":
                        fn = partial(baseline_render, *scene, viewmats, Ks, size, size)
                    else:
                        fn = partial(
                            rasterize,
                            *scene,
                            viewmats,
                            Ks,
                            size,
                            size,
                            backend="torch",
                            cpu_kernel=None if impl == "torch" else False,
                        )
                    fps = time_fps(fn, backward, args.repeats if n < 100_000 else 1)
                    rows.append(
                        {
                            "impl": impl,
                            "size": size,
                            "gaussians": n,
                            "pass": "fwd+bwd" if backward else "fwd",
                            "fps": fps,
                            "ms": 1000 / fps,
                        }
                    )
                    print(
                        f"{impl:>8} {size}^2 {n:>7} {'fwd+bwd' if backward else 'fwd':>7}: {fps:7.2f} fps",
                        flush=True,
                    )

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"splat rasteriser on CPU ({torch.get_num_threads()} threads): frames per second")
    for col in ("size", "Gaussians", "pass", "torch fps", "autograd-path fps", "baseline fps", "speed-up"):
        table.add_column(col, justify="right")
    for size in args.sizes:
        for n in counts:
            for p in ("fwd", "fwd+bwd"):
                t, b, a = (find(rows, impl, size, n, p) for impl in ("torch", "baseline", "torch_autograd"))
                assert t is not None
                table.add_row(
                    f"{size}²",
                    f"{n:,}",
                    p,
                    f"{t['fps']:.1f}",
                    f"{a['fps']:.1f}" if a else "-",
                    f"{b['fps']:.2f}" if b else "-",
                    f"{t['fps'] / b['fps']:.1f}x" if b else "-",
                )
    Console().print(table)
    write_result(args.name, {"threads": torch.get_num_threads(), "results": rows}, args.results_dir)


if __name__ == "__main__":
    main()
