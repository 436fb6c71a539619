"""Splat appearance for the digital twin: one Gaussian set per physics body, posed each frame by
the body's pose from Genesis (T_world_gaussian = T_world_body · T_body_gaussian).

Bodies: the table, every marker and object (primitive, mesh, or a splat / point-cloud file given
as the object's appearance), and every robot link (sampled from the link's visual meshes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from scenes.camera import PinholeCamera
from scenes.splat.gaussians import Gaussians, load_splat_ply, read_ply_vertices
from scenes.splat.render import quat_to_rotmat, rasterize
from scenes.splat.sample import gaussians_from_mesh, gaussians_from_point_cloud, load_mesh, primitive_mesh

if TYPE_CHECKING:
    from scenes.spec import ObjectSpec
    from scenes.twin import DigitalTwin


@dataclass
class BodySplat:
    name: str
    gaussians: Gaussians  # in the body frame
    pose: Callable[[], tuple[np.ndarray, np.ndarray]]  # -> (pos [3], quat wxyz [4]) in world


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _link_frame_mesh(vgeom: Any) -> Any:
    """A visual geom's mesh expressed in its link's frame."""
    import trimesh

    mesh = vgeom.trimesh.copy()
    T = np.eye(4)
    T[:3, :3] = _np(quat_to_rotmat(torch.as_tensor(np.asarray(vgeom.init_quat, dtype=np.float64))))
    T[:3, 3] = np.asarray(vgeom.init_pos, dtype=np.float64)
    mesh.apply_transform(T)
    return mesh if isinstance(mesh, trimesh.Trimesh) else trimesh.util.concatenate(mesh)


def object_appearance(obj: ObjectSpec, spacing: float) -> Gaussians:
    """Gaussians of a SceneSpec object in its own frame."""
    app = obj.appearance
    if app is not None and app.file is not None:
        if app.kind == "splat":
            return load_splat_ply(app.file)
        v = read_ply_vertices(app.file)
        pts = np.stack([v["x"], v["y"], v["z"]], 1)
        rgb = np.stack(
            [
                v.get("red", np.full(len(pts), 180)),
                v.get("green", np.full(len(pts), 180)),
                v.get("blue", np.full(len(pts), 180)),
            ],
            1,
        )
        return gaussians_from_point_cloud(pts, rgb)
    if obj.shape == "mesh":
        assert obj.mesh is not None  # ObjectSpec requires a file for shape "mesh"
        mesh = load_mesh(obj.mesh, obj.size[0])
    else:
        mesh = primitive_mesh(obj.shape, obj.size)
    return gaussians_from_mesh(mesh, spacing=spacing, color=obj.color, source=f"objects.{obj.name}")


class SplatTwinRenderer:
    """Renders a DigitalTwin's cameras from Gaussians bound to its bodies."""

    def __init__(
        self,
        twin: DigitalTwin,
        spacing: float = 0.006,
        table_spacing: float = 0.02,
        backend: Literal["auto", "torch", "gsplat"] = "auto",
        device: str | None = None,
        eps2d: float = 0.05,
    ) -> None:
        self.twin = twin
        self.eps2d = eps2d  # screen-space blur floor (px^2); dense sampled surfaces need little
        spec = twin.spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = backend
        self.background = torch.tensor(twin.background_color, dtype=torch.float32, device=self.device)
        bodies: list[BodySplat] = []

        def entity_pose(ent: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
            return lambda: (_np(ent.get_pos()), _np(ent.get_quat()))

        def flat_surface(
            size: tuple[float, ...], spacing: float, color: tuple[float, float, float]
        ) -> Gaussians:
            # large flat surfaces: only their top face shows; wider, more opaque Gaussians cover it
            return gaussians_from_mesh(
                primitive_mesh("top_face", size), spacing, color, sigma_ratio=0.6, opacity=0.97
            )

        t = spec.table
        bodies.append(
            BodySplat("table", flat_surface(t.size, table_spacing, t.color), entity_pose(twin.table))
        )
        for m, ent in zip(spec.markers, twin.markers, strict=True):
            g = flat_surface(m.size, min(spacing, 0.004), m.color)
            bodies.append(BodySplat(f"marker:{m.name}", g, entity_pose(ent)))
        for obj in spec.objects:
            bodies.append(
                BodySplat(
                    f"object:{obj.name}", object_appearance(obj, spacing), entity_pose(twin.objects[obj.name])
                )
            )
        for link in twin.robot.links:
            meshes = [_link_frame_mesh(vg) for vg in link.vgeoms]
            if not meshes:
                continue
            import trimesh

            mesh = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
            g = gaussians_from_mesh(mesh, spacing, color=(0.9, 0.9, 0.9), source=f"robot link {link.name}")
            bodies.append(BodySplat(f"robot:{link.name}", g, entity_pose(link)))
        self.bodies = [BodySplat(b.name, b.gaussians.to(self.device), b.pose) for b in bodies]
        self.camera_names = [c.name for c in spec.cameras]
        self.mounted = any(c.attach for c in spec.cameras)  # a wrist camera: posed again at every render
        self._pose_cameras(spec.cameras)

    def _pose_cameras(self, specs: list[Any]) -> None:
        cams = [PinholeCamera.from_spec(c) for c in specs]
        self.cameras = cams
        viewmats, Ks = [c.viewmat for c in cams], [c.K for c in cams]
        self.viewmats = torch.tensor(
            np.array(viewmats).reshape(-1, 4, 4), dtype=torch.float32, device=self.device
        )
        self.Ks = torch.tensor(np.array(Ks).reshape(-1, 3, 3), dtype=torch.float32, device=self.device)

    def world_gaussians(self, names: list[str] | None = None) -> Gaussians:
        """All (or the named) bodies' Gaussians posed in the world at the current physics state."""
        out = []
        for b in self.bodies:
            if names is not None and b.name not in names:
                continue
            pos, quat = b.pose()
            q = torch.as_tensor(quat, dtype=torch.float32, device=self.device)
            out.append(
                b.gaussians.transformed(
                    quat_to_rotmat(q), torch.as_tensor(pos, dtype=torch.float32, device=self.device), q
                )
            )
        return Gaussians.cat(out)

    def render(
        self, names: list[str] | None = None, camera: int | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per camera (or only camera index `camera`): RGB float [H, W, 3] and alpha [H, W, 1]."""
        g = self.world_gaussians(names)
        if self.mounted:
            self._pose_cameras(self.twin.camera_specs())
        sel = slice(None) if camera is None else slice(camera, camera + 1)
        outs, alphas = [], []
        for i, cam in list(enumerate(self.cameras))[sel]:
            rgb, alpha, _ = rasterize(
                **g.render_args(),
                viewmats=self.viewmats[i : i + 1],
                Ks=self.Ks[i : i + 1],
                width=cam.width,
                height=cam.height,
                backgrounds=self.background[None],
                backend=self.backend,
                eps2d=self.eps2d,
            )
            outs.append(rgb[0])
            alphas.append(alpha[0])
        return outs, alphas

    def images(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            rgbs, _ = self.render()
        return {
            n: (r.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            for n, r in zip(self.camera_names, rgbs, strict=True)
        }
