"""Pinhole camera model of a CameraSpec (OpenCV convention: x right, y down, z forward).

Used by perception (back-projecting pixels onto the table) and, later, by the splat renderer.
Pixel centres sit at integer + 0.5 coordinates, so pixel (u, v) = column u + 0.5, row v + 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenes.spec import CameraSpec


@dataclass(frozen=True)
class PinholeCamera:
    K: np.ndarray  # [3, 3] intrinsics
    R_wc: np.ndarray  # [3, 3] camera-to-world rotation (columns: camera x, y, z axes in world)
    t_wc: np.ndarray  # [3] camera centre in world
    width: int
    height: int

    @classmethod
    def from_spec(cls, cam: CameraSpec) -> PinholeCamera:
        w, h = cam.resolution
        f = (h / 2.0) / np.tan(np.deg2rad(cam.fov) / 2.0)
        K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
        pos = np.asarray(cam.pos, dtype=np.float64)
        z = np.asarray(cam.lookat, dtype=np.float64) - pos
        z /= np.linalg.norm(z)
        x = np.cross(z, np.asarray(cam.up, dtype=np.float64))
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        return cls(K=K, R_wc=np.stack([x, y, z], axis=1), t_wc=pos, width=w, height=h)

    @property
    def viewmat(self) -> np.ndarray:
        """[4, 4] world-to-camera transform."""
        m = np.eye(4)
        m[:3, :3] = self.R_wc.T
        m[:3, 3] = -self.R_wc.T @ self.t_wc
        return m

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> (pixels [N, 2] as (u, v), depth [N])."""
        pc = (np.asarray(points, dtype=np.float64) - self.t_wc) @ self.R_wc
        uvw = pc @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3], pc[:, 2]

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels [N, 2] (u, v) -> unit world ray directions [N, 3]."""
        pix = np.asarray(pixels, dtype=np.float64)
        homo = np.concatenate([pix, np.ones((len(pix), 1))], axis=1)
        d = np.linalg.solve(self.K, homo.T).T @ self.R_wc.T
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def backproject_to_plane(self, pixels: np.ndarray, z: float) -> np.ndarray:
        """Intersect the pixels' rays with the horizontal plane at height z: world points [N, 3]."""
        d = self.rays(pixels)
        s = (z - self.t_wc[2]) / np.where(np.abs(d[:, 2]) < 1e-9, np.nan, d[:, 2])
        return self.t_wc + s[:, None] * d
