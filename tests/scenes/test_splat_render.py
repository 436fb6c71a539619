"""The torch splat rasteriser against a plain brute-force reference (every Gaussian against every
pixel), values and gradients; and against gsplat's CUDA rasteriser where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from common.errors import SpecError
from scenes.splat.render import rasterize


def _rotmat(q):
    w, x, y, z = q / torch.sqrt((q * q).sum())
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def reference_render(means, quats, scales, opac, rgb, viewmat, K, W, H, eps2d=0.3):
    """One camera. Project each Gaussian (EWA, gsplat's Jacobian clamp), then composite front to
    back over the whole pixel grid, Gaussian by Gaussian, with gsplat's thresholds."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    projected = []
    for i in range(means.shape[0]):
        p = viewmat[:3, :3] @ means[i] + viewmat[:3, 3]
        if p[2] <= 0.01:
            continue
        Rq = _rotmat(quats[i])
        cov_w = Rq @ torch.diag(scales[i] ** 2) @ Rq.T
        cov_c = viewmat[:3, :3] @ cov_w @ viewmat[:3, :3].T
        lim_x = ((W - cx) / fx + 0.15 * W / fx, cx / fx + 0.15 * W / fx)
        lim_y = ((H - cy) / fy + 0.15 * H / fy, cy / fy + 0.15 * H / fy)
        u = torch.clamp(p[0] / p[2], -lim_x[1], lim_x[0]) * p[2]
        v = torch.clamp(p[1] / p[2], -lim_y[1], lim_y[0]) * p[2]
        zero = torch.zeros((), dtype=means.dtype)
        J = torch.stack(
            [
                torch.stack([fx / p[2], zero, -fx * u / p[2] ** 2]),
                torch.stack([zero, fy / p[2], -fy * v / p[2] ** 2]),
            ]
        )
        cov2 = J @ cov_c @ J.T + eps2d * torch.eye(2, dtype=means.dtype)
        mu = torch.stack([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
        projected.append((float(p[2]), p[2], mu, torch.linalg.inv(cov2), opac[i], rgb[i]))
    projected.sort(key=lambda g: g[0])

    vs, us = torch.meshgrid(
        torch.arange(H, dtype=means.dtype), torch.arange(W, dtype=means.dtype), indexing="ij"
    )
    px, py = us + 0.5, vs + 0.5
    color = torch.zeros(H, W, 3, dtype=means.dtype)
    depth = torch.zeros(H, W, dtype=means.dtype)
    T = torch.ones(H, W, dtype=means.dtype)
    done = torch.zeros(H, W, dtype=torch.bool)
    for _, z, mu, inv, o, c in projected:
        dx, dy = mu[0] - px, mu[1] - py
        sigma = 0.5 * (inv[0, 0] * dx * dx + inv[1, 1] * dy * dy) + inv[0, 1] * dx * dy
        alpha = torch.clamp(o * torch.exp(-sigma), max=0.999)
        valid = (sigma >= 0) & (alpha >= 1 / 255) & ~done
        next_T = T * (1 - alpha)
        stop = valid & (next_T <= 1e-4)
        done = done | stop
        take = valid & ~stop
        w = torch.where(take, T * alpha, torch.zeros_like(T))
        color = color + w[..., None] * c
        depth = depth + w * z
        T = torch.where(take, next_T, T)
    alpha_img = 1 - T
    return color, alpha_img[..., None], (depth / alpha_img.clamp_min(1e-10))[..., None]


def _scene(n, seed, dtype=torch.float64, spread=0.6):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack(
        [
            (torch.rand(n, generator=g) - 0.5) * spread,
            (torch.rand(n, generator=g) - 0.5) * spread * 0.7,
            1.0 + torch.rand(n, generator=g) * 1.5,
        ],
        -1,
    )
    quats = torch.randn(n, 4, generator=g)
    scales = 0.02 + 0.12 * torch.rand(n, 3, generator=g)
    opac = 0.3 + 0.7 * torch.rand(n, generator=g)
    opac[: n // 3] = 0.999  # some opaque layers so the 1e-4 transmittance cut-off is exercised
    rgb = torch.rand(n, 3, generator=g)
    return [t.to(dtype) for t in (means, quats, scales, opac, rgb)]


def _camera(W, H, dtype=torch.float64, f=None):
    f = f or 0.9 * W
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=dtype)
    view = torch.eye(4, dtype=dtype)
    view[:3, 3] = torch.tensor([0.03, -0.02, 0.1])
    c, s = torch.cos(torch.tensor(0.1)), torch.sin(torch.tensor(0.1))
    view[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=dtype)
    return view, K


def _render(scene, view, K, W, H, **options):
    """rasterize one camera: `scene` = (means, quats, scales, opacities, colours), view [4, 4], K [3, 3]."""
    return rasterize(*scene, view[None], K[None], W, H, **options)


@pytest.mark.parametrize("cpu_kernel", [False, True], ids=["autograd-path", "compiled-path"])
@pytest.mark.parametrize("seed, n, W, H, tile", [(0, 12, 20, 14, 8), (1, 30, 33, 17, 4), (2, 25, 24, 24, 16)])
def test_torch_backend_matches_brute_force(seed, n, W, H, tile, cpu_kernel):
    scene = _scene(n, seed)
    view, K = _camera(W, H)
    ref_c, ref_a, ref_d = reference_render(*scene, view, K, W, H)
    c, a, d = _render(scene, view, K, W, H, backend="torch", tile_size=tile, cpu_kernel=cpu_kernel)
    assert ref_a.max() > 0.9 and (ref_a < 0.5).any()  # a scene with both coverage and gaps
    assert (c[0] - ref_c).abs().max() <= 1e-4
    assert (a[0] - ref_a).abs().max() <= 1e-4
    covered = ref_a[..., 0] > 0.05
    assert (d[0][covered] - ref_d[covered]).abs().max() <= 1e-4


@pytest.mark.parametrize("cpu_kernel", [False, True], ids=["autograd-path", "compiled-path"])
def test_float32_and_small_pair_budget_agree_with_reference(cpu_kernel):
    means, quats, scales, opac, rgb = _scene(40, 3)
    view, K = _camera(32, 24)
    ref_c, ref_a, _ = reference_render(means, quats, scales, opac, rgb, view, K, 32, 24)
    f32 = [t.float() for t in (means, quats, scales, opac, rgb)]
    c, a, _ = rasterize(
        *f32,
        view[None].float(),
        K[None].float(),
        32,
        24,
        backend="torch",
        pair_budget=300,
        cpu_kernel=cpu_kernel,
    )
    assert (c[0].double() - ref_c).abs().max() <= 1e-4 and (a[0].double() - ref_a).abs().max() <= 1e-4


def test_compiled_path_is_chosen_without_gradients_and_agrees_with_autograd_path():
    means, quats, scales, opac, rgb = _scene(300, 9, spread=1.0)
    view, K = _camera(48, 40)
    fast = rasterize(means, quats, scales, opac, rgb, view[None], K[None], 48, 40)
    slow = rasterize(means, quats, scales, opac, rgb, view[None], K[None], 48, 40, cpu_kernel=False)
    for x, y in zip(fast, slow, strict=True):
        assert (x - y).abs().max() <= 1e-6


def test_batch_of_cameras_equals_cameras_one_by_one():
    means, quats, scales, opac, rgb = _scene(20, 4)
    v1, K = _camera(16, 16)
    v2 = v1.clone()
    v2[:3, 3] += torch.tensor([0.1, 0.05, -0.2], dtype=v1.dtype)
    both, _, _ = rasterize(
        means, quats, scales, opac, rgb, torch.stack([v1, v2]), torch.stack([K, K]), 16, 16
    )
    one, _, _ = rasterize(means, quats, scales, opac, rgb, v2[None], K[None], 16, 16)
    torch.testing.assert_close(both[1], one[0], atol=1e-12, rtol=0)


def test_gradients_match_the_reference_and_finite_differences():
    means, quats, scales, opac, rgb = _scene(6, 5, spread=0.3)
    view, K = _camera(12, 10, f=14.0)
    W, H = 12, 10
    weights = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, rgb)]
    vparam = view.clone().requires_grad_(True)

    def loss_torch(m, q, s, o, c, v):
        col, a, _ = rasterize(m, q, s, o, c, v[None], K[None], W, H, backend="torch", tile_size=4)
        return (col[0] * weights).sum() + a.sum()

    def loss_ref(m, q, s, o, c, v):
        col, a, _ = reference_render(m, q, s, o, c, v, K, W, H)
        return (col * weights).sum() + a.sum()

    g_torch = torch.autograd.grad(loss_torch(*params, vparam), [*params, vparam])
    g_ref = torch.autograd.grad(loss_ref(*params, vparam), [*params, vparam])
    for name, a, b in zip(
        ["means", "quats", "scales", "opacities", "colors", "viewmat"], g_torch, g_ref, strict=True
    ):
        assert a.abs().max() > 0, name  # every parameter, camera pose included, receives gradient
        assert (a - b).abs().max() <= 1e-4, name
    # and the analytic gradients are the true derivative of the rendered image
    assert torch.autograd.gradcheck(
        lambda m, s, v: loss_torch(m, params[1], s, params[3], params[4], v),
        (params[0], params[2], vparam),
        eps=1e-6,
        atol=1e-5,
    )


def test_sh_degree_colours_depend_on_view_direction():
    from scenes.splat.render import eval_sh

    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    coeffs = torch.zeros(2, 16, 3)
    coeffs[:, 0] = 1.0
    coeffs[:, 2] = 1.0  # the z-linear band
    out = eval_sh(3, dirs, coeffs)
    torch.testing.assert_close(out[0], torch.full((3,), 0.28209479177387814 + 0.4886025119029199))
    torch.testing.assert_close(out[1], torch.full((3,), 0.28209479177387814))


def test_empty_and_offscreen_scenes_render_background():
    means, quats, scales, opac, rgb = _scene(5, 6)
    view, K = _camera(10, 8)
    behind = means.clone()
    behind[:, 2] = -1.0
    background = torch.tensor([[0.2, 0.3, 0.4]], dtype=torch.float64)
    c, a, _ = _render((behind, quats, scales, opac, rgb), view, K, 10, 8, backgrounds=background)
    assert a.abs().max() == 0
    torch.testing.assert_close(c[0, 3, 4], torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda a: a.__setitem__(0, a[0].clone().index_fill_(0, torch.tensor([1]), float("nan"))),
            "means contains NaN",
        ),
        (lambda a: a.__setitem__(2, a[2][:, :2]), r"scales must be \[N, 3\]"),
        (lambda a: a.__setitem__(7, 0), "image size must be positive, got 0x8"),
    ],
)
def test_bad_inputs_give_one_line_errors(mutate, match):
    means, quats, scales, opac, rgb = _scene(5, 7)
    view, K = _camera(10, 8)
    args = [means, quats, scales, opac, rgb, view[None], K[None], 10, 8]
    mutate(args)
    with pytest.raises(SpecError, match=match):
        rasterize(*args)


@pytest.mark.gpu
def test_torch_and_gsplat_backends_agree_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    means, quats, scales, opac, rgb = [t.float().cuda() for t in _scene(200, 8, spread=1.0)]
    view, K = [t.float().cuda() for t in _camera(64, 48)]
    a = rasterize(means, quats, scales, opac, rgb, view[None], K[None], 64, 48, backend="torch")
    b = rasterize(means, quats, scales, opac, rgb, view[None], K[None], 64, 48, backend="gsplat")
    for x, y in zip(a[:2], b[:2], strict=True):
        assert (x - y).abs().mean() <= 1e-3
