"""Gaussians from surfaces: meshes (with vertex colours, textures or a material colour), primitives
and coloured point clouds. Every set is expressed in its body's own frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import SpecError
from scenes.splat.gaussians import Gaussians


def _normal_to_quat(normals: np.ndarray) -> np.ndarray:
    """wxyz quaternions rotating +z onto each unit normal [N, 3] (thin axis along the normal)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, normals)
    s = np.linalg.norm(axis, axis=1)
    c = normals @ z
    angle = np.arctan2(s, c)
    axis = np.where(s[:, None] > 1e-9, axis / np.maximum(s[:, None], 1e-12), np.array([1.0, 0.0, 0.0]))
    half = angle / 2
    return np.concatenate([np.cos(half)[:, None], axis * np.sin(half)[:, None]], 1)


def stratified_surface_samples(mesh: Any, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points spread evenly over a mesh: each face gets its area's share (largest remainders),
    placed by a quasi-random R2 sequence in barycentric coordinates. Much lower centroid and
    coverage error than i.i.d. sampling, so a body's Gaussians sit centred on its surface."""
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    share = area / area.sum() * n
    counts = np.floor(share).astype(np.int64)
    rest = n - counts.sum()
    if rest > 0:
        counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    face_idx = np.repeat(np.arange(len(area)), counts)
    # per-face sequence index, offset by a seeded shift so different seeds give different layouts
    starts = np.cumsum(counts) - counts
    k = np.arange(n) - np.repeat(starts, counts)
    g = 1.32471795724474602596  # plastic number: the R2 sequence
    shift = np.random.default_rng(seed).random((len(area), 2))[face_idx]
    u = (shift[:, 0] + (k + 0.5) / g) % 1.0
    v = (shift[:, 1] + (k + 0.5) / g**2) % 1.0
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    tri = np.asarray(mesh.triangles)[face_idx]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return points, face_idx


def mesh_colors_at(
    mesh: Any, face_idx: np.ndarray, points: np.ndarray, fallback: tuple[float, float, float]
) -> np.ndarray:
    """RGB in [0, 1] at surface points: vertex colours (textures converted), else face colours,
    else the material's main colour, else `fallback`."""
    visual = getattr(mesh, "visual", None)
    try:
        if visual is not None and visual.kind == "texture":
            visual = visual.to_color()
    except Exception:  # noqa: BLE001 - a texture that cannot be sampled falls back to flat colour
        visual = None
    if visual is not None and visual.kind == "vertex" and len(visual.vertex_colors) == len(mesh.vertices):
        import trimesh

        tri = mesh.triangles[face_idx]
        bary = trimesh.triangles.points_to_barycentric(tri, points)
        vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        return np.einsum("nk,nkc->nc", bary, vc[mesh.faces[face_idx]]).clip(0, 1)
    if visual is not None and visual.kind == "face" and len(visual.face_colors) == len(mesh.faces):
        return np.asarray(visual.face_colors, dtype=np.float64)[face_idx, :3] / 255.0
    main = getattr(getattr(getattr(mesh, "visual", None), "material", None), "main_color", None)
    if main is not None:
        return np.tile(np.asarray(main[:3], dtype=np.float64) / 255.0, (len(points), 1))
    return np.tile(np.asarray(fallback, dtype=np.float64), (len(points), 1))


def gaussians_from_mesh(
    mesh: Any,
    spacing: float = 0.006,
    color: tuple[float, float, float] = (0.7, 0.7, 0.7),
    seed: int = 0,
    max_gaussians: int = 200_000,
    source: str = "mesh",
    opacity: float = 0.8,
    sigma_ratio: float = 0.35,
) -> Gaussians:
    """Flat Gaussians sampled evenly over a trimesh surface: one per `spacing`² of area."""
    faces = getattr(mesh, "faces", None)
    if faces is None or len(faces) == 0:
        raise SpecError(f"{source}: mesh has no faces; cannot place Gaussians on its surface")

    area = float(mesh.area)
    n = int(np.clip(area / spacing**2, 16, max_gaussians))
    points, face_idx = stratified_surface_samples(mesh, n, seed)
    # the set's centroid is made the surface's exact one (a sub-millimetre shift), so that a body's
    # Gaussians are centred where its physics says it is
    tri_area = np.asarray(mesh.area_faces)
    surface_centroid = (np.asarray(mesh.triangles_center) * tri_area[:, None]).sum(0) / tri_area.sum()
    points = points + (surface_centroid - points.mean(0))
    normals = np.asarray(mesh.face_normals)[face_idx]
    rgb = mesh_colors_at(mesh, face_idx, points, color)
    # spacing adapts when the cap limits the count, so the surface stays covered
    step = max(spacing, (area / n) ** 0.5)
    # a tangent sigma of 0.35 spacing covers the surface without fattening its silhouette (larger
    # ratios suit big flat surfaces); a thin normal axis keeps coplanar surfaces from interleaving
    scales = np.tile([sigma_ratio * step, sigma_ratio * step, min(0.05 * step, 5e-4)], (n, 1))
    f = torch.float32
    return Gaussians.from_colors(
        torch.as_tensor(points, dtype=f),
        torch.as_tensor(rgb, dtype=f),
        torch.as_tensor(scales, dtype=f),
        quats=torch.as_tensor(_normal_to_quat(normals), dtype=f),
        opacity=opacity,
    )


def primitive_mesh(shape: str, size: tuple[float, ...]) -> Any:
    import trimesh

    if shape == "top_face":  # the visible face of a table or a marker: a rectangle at z = +size/2
        x, y, z = size[0] / 2, size[1] / 2, size[2] / 2
        return trimesh.Trimesh(
            vertices=[[-x, -y, z], [x, -y, z], [x, y, z], [-x, y, z]], faces=[[0, 1, 2], [0, 2, 3]]
        )
    if shape == "box":
        return trimesh.creation.box(extents=size)
    if shape == "sphere":
        return trimesh.creation.icosphere(subdivisions=3, radius=size[0])
    if shape == "cylinder":
        return trimesh.creation.cylinder(radius=size[0], height=size[1], sections=48)
    raise SpecError(f"primitive_mesh: unknown shape {shape!r}")


def load_mesh(path: str | Path, scale: float = 1.0) -> Any:
    """A mesh file (OBJ/PLY/GLB/STL...) as one trimesh; one-line errors for unreadable or empty files."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as e:  # noqa: BLE001
        raise SpecError(
            f"{path}: cannot read mesh: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
        raise SpecError(f"{path}: mesh has no faces")
    if scale != 1.0:
        mesh.apply_scale(scale)
    return mesh


def gaussians_from_point_cloud(
    points: np.ndarray, colors: np.ndarray, spacing: float | None = None
) -> Gaussians:
    """Isotropic Gaussians on coloured points [N, 3] / [N, 3] (colours in [0, 1] or 0-255)."""
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.float64)
    if colors.max(initial=0) > 1.0:
        colors = colors / 255.0
    if spacing is None:
        extent = np.ptp(points, axis=0)
        spacing = float(np.sqrt(max(extent[0] * extent[1], 1e-6) / max(len(points), 1)))
    f = torch.float32
    return Gaussians.from_colors(
        torch.as_tensor(points, dtype=f),
        torch.as_tensor(colors.clip(0, 1), dtype=f),
        torch.full((len(points), 3), 0.7 * spacing, dtype=f),
        opacity=0.95,
    )
