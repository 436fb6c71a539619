"""Sets of 3-D Gaussians and the standard 3D Gaussian Splatting PLY format.

A `Gaussians` set stores what 3DGS optimises: means [N, 3], quaternions wxyz [N, 4], log-scales
[N, 3], opacity logits [N] and spherical-harmonic colour coefficients [N, K, 3] (K = (d + 1)^2,
degree d in 0..3). `render_args()` turns them into what `rasterize` takes.

PLY layout (binary little-endian, as written by the reference 3DGS code and read by every viewer):
`x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`, all float32, with
`f_rest` stored channel-major (all red coefficients, then green, then blue).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor

from common.errors import SpecError

SH_C0 = 0.28209479177387814


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


class RenderArgs(TypedDict):
    """The Gaussians' part of `rasterize`'s arguments."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz
    scales: Tensor  # [N, 3] linear
    opacities: Tensor  # [N] in [0, 1]
    colors: Tensor  # [N, K, 3] SH coefficients
    sh_degree: int


@dataclass
class Gaussians:
    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz
    log_scales: Tensor  # [N, 3]
    opacity_logits: Tensor  # [N]
    sh: Tensor  # [N, K, 3]

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        k = self.sh.shape[1] if self.sh.ndim == 3 else -1
        if (
            self.means.shape != (n, 3)
            or self.quats.shape != (n, 4)
            or self.log_scales.shape != (n, 3)
            or self.opacity_logits.shape != (n,)
            or self.sh.shape != (n, k, 3)
            or k not in (1, 4, 9, 16)
        ):
            raise SpecError(
                "Gaussians: inconsistent shapes "
                + ", ".join(f"{f.name}={tuple(getattr(self, f.name).shape)}" for f in fields(self))
                + " (expected [N,3], [N,4], [N,3], [N], [N,K,3] with K in 1, 4, 9, 16)"
            )

    @property
    def n(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    def check_finite(self, source: str) -> None:
        for f in fields(self):
            t = getattr(self, f.name)
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1).nonzero()[0])
                raise SpecError(f"{source}: {f.name} contains NaN/inf (first at Gaussian {bad})")

    @classmethod
    def from_colors(
        cls,
        means: Tensor,
        rgb: Tensor,
        scales: Tensor,
        quats: Tensor | None = None,
        opacity: float | Tensor = 0.95,
        sh_degree: int = 0,
    ) -> Gaussians:
        """Build from plain RGB colours in [0, 1] and linear scales."""
        n = means.shape[0]
        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3, dtype=means.dtype, device=means.device)
        sh[:, 0] = rgb_to_sh_dc(rgb.to(means.dtype))
        if quats is None:
            quats = torch.zeros(n, 4, dtype=means.dtype, device=means.device)
            quats[:, 0] = 1
        op = torch.as_tensor(opacity, dtype=means.dtype, device=means.device).expand(n).clamp(1e-6, 1 - 1e-6)
        return cls(means, quats, torch.log(scales.clamp_min(1e-9)), torch.logit(op), sh)

    def render_args(self) -> RenderArgs:
        """Keyword arguments for `rasterize` (linear scales, sigmoid opacities, SH colours)."""
        return {
            "means": self.means,
            "quats": self.quats,
            "scales": self.log_scales.exp(),
            "opacities": torch.sigmoid(self.opacity_logits),
            "colors": self.sh,
            "sh_degree": self.sh_degree,
        }

    def transformed(self, rot: Tensor, trans: Tensor, quat: Tensor) -> Gaussians:
        """Gaussians placed by a rigid transform: x -> rot @ x + trans, orientations q -> quat * q.

        rot [3, 3], trans [3], quat [4] wxyz (the same rotation as `rot`). View-dependent SH
        colours are not rotated (exact for degree 0).
        """
        return Gaussians(
            self.means @ rot.T + trans,
            quat_multiply(quat.expand_as(self.quats), self.quats),
            self.log_scales,
            self.opacity_logits,
            self.sh,
        )

    @staticmethod
    def cat(items: list[Gaussians]) -> Gaussians:
        k = max(g.sh.shape[1] for g in items)
        sh = [torch.nn.functional.pad(g.sh, (0, 0, 0, k - g.sh.shape[1])) for g in items]
        return Gaussians(
            torch.cat([g.means for g in items]),
            torch.cat([g.quats for g in items]),
            torch.cat([g.log_scales for g in items]),
            torch.cat([g.opacity_logits for g in items]),
            torch.cat(sh),
        )

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Gaussians:
        return Gaussians(*(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)))


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


# ------------------------------------------------------------------ PLY
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """Vertex properties of a PLY file (binary little/big endian or ASCII) as name -> array.

    Other elements (faces, ...) are skipped. Raises SpecError with one line on any malformation.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise SpecError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    nl = data.find(b"\n", end)
    body = data[nl + 1 :]
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt: str | None = None
    elements: list[tuple[str, int, list[Any]]] = []  # (name, count, [(prop, dtype) | ("list", ...)])
    for line in header[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1] if len(parts) > 1 else None
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append(("list", parts[2], parts[3], parts[4]))
            elif parts[1] in _PLY_TYPES and len(parts) == 3:
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
            else:
                raise SpecError(f"{path}: bad property line {line!r}")
        else:
            raise SpecError(f"{path}: bad header line {line!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise SpecError(f"{path}: unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise SpecError(f"{path}: the first element must be 'vertex'")
    name, count, props = elements[0]
    if any(p[0] == "list" for p in props):
        raise SpecError(f"{path}: list properties on vertices are not supported")
    if fmt == "ascii":
        rows = body.decode("ascii", errors="replace").split("\n")[:count]
        try:
            arr = np.array([[float(v) for v in r.split()] for r in rows], dtype=np.float64)
        except ValueError:
            raise SpecError(f"{path}: malformed ASCII vertex data") from None
        if arr.shape != (count, len(props)):
            raise SpecError(f"{path}: expected {count} vertices x {len(props)} properties, got {arr.shape}")
        return {p[0]: arr[:, i].astype(p[1]) for i, p in enumerate(props)}
    endian = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(p[0], endian + p[1]) for p in props])
    need = dtype.itemsize * count
    if len(body) < need:
        raise SpecError(
            f"{path}: truncated: header declares {count} vertices ({need} bytes), file has {len(body)}"
        )
    rec = np.frombuffer(body[:need], dtype=dtype, count=count)
    return {p[0]: np.ascontiguousarray(rec[p[0]]).astype(p[1]) for p in props}


def load_splat_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS PLY into Gaussians (float32, bit-exact)."""
    v = read_ply_vertices(path)
    required = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    missing = [k for k in required if k not in v]
    if missing:
        raise SpecError(f"{path}: not a 3D Gaussian Splatting PLY: missing vertex properties {missing}")
    n_rest = len([k for k in v if k.startswith("f_rest_")])
    if n_rest % 3 or (n_rest // 3 + 1) not in (1, 4, 9, 16):
        raise SpecError(f"{path}: {n_rest} f_rest_* properties do not match an SH degree 0-3")
    k = n_rest // 3 + 1

    def col(*names: str) -> Tensor:
        return torch.from_numpy(np.stack([v[n].astype(np.float32) for n in names], -1))

    sh = torch.zeros(len(v["x"]), k, 3)
    sh[:, 0] = col("f_dc_0", "f_dc_1", "f_dc_2")
    if k > 1:
        rest = col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(-1, 3, k - 1)
        sh[:, 1:] = rest.transpose(1, 2)
    g = Gaussians(
        means=col("x", "y", "z"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=col("scale_0", "scale_1", "scale_2"),
        opacity_logits=col("opacity")[:, 0],
        sh=sh,
    )
    g.check_finite(str(path))
    return g


def save_splat_ply(g: Gaussians, path: str | Path) -> None:
    """Write Gaussians as a 3DGS PLY (float32, binary little-endian), atomically."""
    import os

    path = Path(path)
    k = g.sh.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    cpu = g.to("cpu", torch.float32)
    rest = cpu.sh[:, 1:].transpose(1, 2).reshape(g.n, -1)
    cols = (
        torch.cat(
            [
                cpu.means,
                torch.zeros(g.n, 3),
                cpu.sh[:, 0],
                rest,
                cpu.opacity_logits[:, None],
                cpu.log_scales,
                cpu.quats,
            ],
            1,
        )
        .detach()
        .numpy()
    )
    rec = np.empty(g.n, dtype=np.dtype([(n, "<f4") for n in names]))
    for i, n in enumerate(names):
        rec[n] = cols[:, i]
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {g.n}\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())
    os.replace(tmp, path)
