"""Scene authoring: create and edit SceneSpec YAML files, keeping their order and comments.

Every edit is validated as a whole SceneSpec before the file is (atomically) rewritten, so an
authored scene always loads. Used by `dreamtwin scenes new | add-object | set-camera | import-scan`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.config import validate_model
from common.errors import SpecError
from common.io import atomic_write_text
from scenes.spec import SceneSpec


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.default_flow_style = None
    y.width = 4096  # never re-wrap a line the author wrote on one
    return y


def _flow(seq: Sequence[Any]) -> Any:
    """A YAML list written inline: `[0.5, 0.0, 0.025]`."""
    from ruamel.yaml.comments import CommentedSeq

    s = CommentedSeq([float(x) if isinstance(x, (float, np.floating)) else x for x in seq])
    s.fa.set_flow_style()
    return s


def load_document(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    try:
        return _yaml().load(path.read_text())
    except Exception as e:  # noqa: BLE001 - ruamel raises many types; all mean malformed YAML
        raise SpecError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None


def document_text(doc: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    return buf.getvalue()


def check_document(doc: Any, path: str | Path) -> tuple[SceneSpec, str]:
    """The edited document as a validated SceneSpec (strict keys, files, layout) and its YAML text."""
    path = Path(path)
    text = document_text(doc)
    import yaml

    spec = validate_model(SceneSpec, yaml.safe_load(text), str(path), context={"base_dir": path.parent})
    check_layout(spec, path)
    return spec, text


def save_document(doc: Any, path: str | Path, *, expect: str | None = None) -> SceneSpec:
    """Validate the edited document as a SceneSpec, then write it atomically. `expect`: the text the file
    held when it was opened; a file changed on disk since then is not overwritten."""
    path = Path(path)
    spec, text = check_document(doc, path)
    if expect is not None and (not path.is_file() or path.read_text() != expect):
        raise SpecError(f"{path}: changed on disk since it was opened; not overwritten (reload it to edit)")
    atomic_write_text(path, text)
    return spec


def check_layout(spec: SceneSpec, path: str | Path) -> None:
    """What a valid spec can still get wrong when authored by hand or gizmo: an object sunk into the table
    top (z = 0), a camera that sees neither the table nor any object."""
    t = spec.table
    half = np.array(t.size[:2]) / 2
    for i, o in enumerate(spec.objects):
        roll, pitch, _ = o.pose.euler_deg
        if o.shape == "mesh" or abs(roll) > 1e-6 or abs(pitch) > 1e-6:
            continue  # bottom unknown without the mesh or for a tilted body
        bottom = o.pose.pos[2] - o.half_height()
        on_table = np.all(np.abs(np.array(o.pose.pos[:2]) - t.center_xy) <= half)
        if on_table and bottom < -1e-3:
            raise SpecError(
                f"{path}: objects.{i}.pose.pos ({o.name}): its bottom is {-bottom * 100:.1f} cm inside the table "
                f"(z = {o.pose.pos[2]:g}; the table top is z = 0, so z >= {o.half_height():g})"
            )
    from scenes.camera import PinholeCamera

    gx, gy = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    points = [
        np.stack(
            [t.center_xy[0] + gx.ravel() * half[0], t.center_xy[1] + gy.ravel() * half[1], 0 * gx.ravel()], 1
        )
    ]
    points += [np.array([o.pose.pos]) for o in spec.objects]
    pts = np.concatenate(points)
    for i, c in enumerate(spec.cameras):
        if c.attach:  # a wrist camera looks where the hand does
            continue
        cam = PinholeCamera.from_spec(c)
        uv, depth = cam.project(pts)
        seen = (
            (depth > 1e-3)
            & (uv[:, 0] >= 0)
            & (uv[:, 0] <= cam.width)
            & (uv[:, 1] >= 0)
            & (uv[:, 1] <= cam.height)
        )
        if not seen.any():
            raise SpecError(
                f"{path}: cameras.{i} ({c.name}): sees neither the table nor any object "
                f"(pos {list(c.pos)}, lookat {list(c.lookat)})"
            )


def edit_file(path: str | Path, edit: Callable[[Any, Path], None]) -> SceneSpec:
    """Load the file, apply one document edit (`edit(doc, path)`), validate and write it: every CLI verb."""
    path = Path(path)
    doc = load_document(path)
    edit(doc, path)
    return save_document(doc, path)


NEW_SCENE = """\
# {name}: authored with `dreamtwin scenes new`. Lengths in metres, angles in degrees,
# colours RGB in [0, 1]. The table top is the z = 0 plane; the robot stands at the origin.
version: 1
name: {name}
robot:
  type: franka_panda
  init_ee_pos: [0.40, 0.0, 0.25]
table:
  size: [1.2, 1.2, 0.05]
  center_xy: [0.4, 0.0]
objects: []
cameras:
  - name: side
    pos: [0.62, 0.80, 0.62]
    lookat: [0.50, 0.02, 0.0]
    fov: 50
    resolution: [128, 128]
task:
  instruction: ""
  max_steps: 60
"""


def new_scene(name: str, path: str | Path, overwrite: bool = False) -> SceneSpec:
    path = Path(path)
    if path.exists() and not overwrite:
        raise SpecError(f"{path}: already exists (pass --overwrite to replace it)")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise SpecError(f"scene name {name!r}: use letters, digits, '_' and '-'")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = _yaml().load(NEW_SCENE.format(name=name))
    return save_document(doc, path)


def _add_entry(doc: Any, path: Path, entry: dict[str, Any]) -> None:
    """Append an object entry, rejecting a name the scene already uses."""
    objects = doc.get("objects")
    if any(o.get("name") == entry["name"] for o in objects or []):
        raise SpecError(f"{path}: objects: an object named {entry['name']!r} already exists")
    if objects is None:
        doc["objects"] = []
    doc["objects"].append(entry)


def _relative(file: str | Path, spec_path: Path) -> str:
    file = Path(file).resolve()
    try:
        return str(file.relative_to(spec_path.parent.resolve()))
    except ValueError:
        return str(file)


def add_object(path: str | Path, name: str, kind: str, **options: Any) -> SceneSpec:
    """Add an object to the file (`dreamtwin scenes add-object`); options as `edit_add_object`."""
    return edit_file(path, lambda doc, p: edit_add_object(doc, p, name, kind, **options))


def edit_add_object(
    doc: Any,
    path: Path,
    name: str,
    kind: str,
    *,
    size: list[float] | None = None,
    file: str | None = None,
    pos: Sequence[float] | None = None,
    yaw_deg: float = 0.0,
    mass: float = 0.1,
    friction: float = 1.0,
    color: list[float] | None = None,
    fixed: bool = False,
) -> None:
    """Add an object: a primitive (box/sphere/cylinder), a mesh file, or a splat / point-cloud PLY
    (appearance from the file, collision from its bounding box). Without `pos` a primitive rests on the
    table top at x = 0.5."""
    entry: dict[str, Any] = {"name": name}
    if kind in ("box", "sphere", "cylinder"):
        if not size:
            raise SpecError(f"add-object {name}: --size is required for a {kind}")
        entry.update(shape=kind, size=_flow(size))
    elif kind == "mesh":
        if not file:
            raise SpecError(f"add-object {name}: --file is required for a mesh")
        from scenes.splat.sample import load_mesh

        load_mesh(file)  # a file that does not parse is refused here, not at the next build
        entry.update(shape="mesh", size=_flow(size or [1.0]), mesh=_relative(file, path))
    elif kind in ("splat", "point_cloud"):
        if not file:
            raise SpecError(f"add-object {name}: --file is required for a {kind}")
        lo, hi = _ply_bounds(file, kind)
        extent = np.maximum(hi - lo, 0.005)
        entry.update(
            shape="box",
            size=_flow(np.round(extent, 4).tolist()),
            appearance={"kind": kind, "file": _relative(file, path)},
        )
    else:
        raise SpecError(
            f"add-object {name}: unknown kind {kind!r}; choose box, sphere, cylinder, mesh, splat, point_cloud"
        )
    if color is not None:
        entry["color"] = _flow(color)
    entry.update(mass=float(mass), friction=float(friction))
    if fixed:
        entry["fixed"] = True
    if pos is None:  # resting on the table top at x = 0.5
        half = {
            "box": (size or [0, 0, 0])[-1] / 2,
            "sphere": (size or [0])[0],
            "cylinder": (size or [0])[-1] / 2,
        }
        pos = (0.5, 0.0, float(half.get(kind, 0.0)))
    pose: dict[str, Any] = {"pos": _flow(pos)}
    if yaw_deg:
        pose["euler_deg"] = _flow([0.0, 0.0, yaw_deg])
    entry["pose"] = pose
    _add_entry(doc, path, entry)


def _ply_bounds(file: str | Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    from scenes.splat.gaussians import read_ply_vertices

    v = read_ply_vertices(file)
    if not {"x", "y", "z"} <= set(v):
        raise SpecError(f"{file}: PLY has no x/y/z vertex properties")
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise SpecError(f"{file}: {kind} has no points or contains NaN/inf")
    return pts.min(0), pts.max(0)


def set_camera(path: str | Path, name: str, **fields: Any) -> SceneSpec:
    """Add a camera, or change the given fields of an existing one (`dreamtwin scenes set-camera`)."""
    return edit_file(path, lambda doc, p: edit_set_camera(doc, p, name, **fields))


def edit_set_camera(
    doc: Any,
    path: Path,
    name: str,
    *,
    pos: list[float] | None = None,
    lookat: list[float] | None = None,
    fov: float | None = None,
    resolution: list[int] | None = None,
    up: list[float] | None = None,
) -> None:
    """Add a camera, or change the given fields of an existing one."""
    if doc.get("cameras") is None:
        doc["cameras"] = []
    cams = doc["cameras"]
    cam = next((c for c in cams if c.get("name") == name), None)
    if cam is None:
        if pos is None or lookat is None:
            raise SpecError(f"set-camera {name}: a new camera needs --pos and --lookat")
        cam = {"name": name}
        cams.append(cam)
    for key, value in (("pos", pos), ("lookat", lookat), ("up", up), ("resolution", resolution)):
        if value is not None:
            cam[key] = _flow(value)
    if fov is not None:
        cam["fov"] = float(fov)


def import_scan(path: str | Path, ply: str | Path, name: str = "scan", **options: Any) -> SceneSpec:
    """A scan as a new object of the file (`dreamtwin scenes import-scan`); options as `edit_import_scan`."""
    return edit_file(path, lambda doc, p: edit_import_scan(doc, p, ply, name, **options))


def edit_import_scan(
    doc: Any,
    path: Path,
    ply: str | Path,
    name: str = "scan",
    *,
    voxel: float = 0.005,
    fixed: bool = True,
    method: str = "alpha",
) -> None:
    """A coloured point cloud (or 3DGS splat) of a real object/table -> a collision mesh by open3d
    surface reconstruction (written next to the scene as OBJ) + Gaussians for its appearance."""
    import open3d as o3d

    from scenes.splat.gaussians import read_ply_vertices

    path, ply = Path(path), Path(ply)
    if any(o.get("name") == name for o in doc.get("objects") or []):
        raise SpecError(f"{path}: objects: an object named {name!r} already exists")
    v = read_ply_vertices(ply)
    if not {"x", "y", "z"} <= set(v):
        raise SpecError(f"{ply}: PLY has no x/y/z vertex properties")
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if len(pts) < 20 or not np.all(np.isfinite(pts)):
        raise SpecError(f"{ply}: a scan needs at least 20 finite points, got {len(pts)}")
    kind = "splat" if "f_dc_0" in v else "point_cloud"
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)).voxel_down_sample(voxel)
    centre = np.asarray(pcd.get_axis_aligned_bounding_box().get_center())
    if method == "alpha":
        mesh = o3d.geometry.TriangleMesh.create_from_point_cloud_alpha_shape(pcd, alpha=max(4 * voxel, 0.02))
    elif method == "poisson":
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * voxel, max_nn=30))
        pcd.orient_normals_consistent_tangent_plane(15)
        mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=7)
    else:
        raise SpecError(f"import-scan: unknown method {method!r}; choose alpha or poisson")
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    if len(mesh.triangles) == 0:
        raise SpecError(f"{ply}: reconstruction produced no faces (try a larger --voxel)")
    # collision mesh and appearance both live in the object's frame, centred on the scan
    mesh.translate(-centre)
    mesh_file = path.parent / "meshes" / f"{name}.obj"
    mesh_file.parent.mkdir(parents=True, exist_ok=True)
    o3d.io.write_triangle_mesh(mesh_file, mesh, write_vertex_colors=False)
    app_file = path.parent / "meshes" / f"{name}_appearance.ply"
    _write_centred_appearance(v, centre, ply, app_file, kind)
    entry = {
        "name": name,
        "shape": "mesh",
        "size": _flow([1.0]),
        "mesh": _relative(mesh_file, path),
        "appearance": {"kind": kind, "file": _relative(app_file, path)},
        "fixed": fixed,
        "pose": {"pos": _flow(np.round(centre, 5).tolist())},
    }
    _add_entry(doc, path, entry)


def _write_centred_appearance(
    v: dict[str, np.ndarray], centre: np.ndarray, src: Path, out: Path, kind: str
) -> None:
    """The scan's appearance in the object's frame: a shifted copy of the splat, or of the points."""
    import torch

    from scenes.splat.gaussians import Gaussians, load_splat_ply, save_splat_ply

    if kind == "splat":
        g = load_splat_ply(src)
        shift = torch.as_tensor(centre, dtype=g.means.dtype)
        save_splat_ply(Gaussians(g.means - shift, g.quats, g.log_scales, g.opacity_logits, g.sh), out)
        return
    import open3d as o3d

    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64) - centre
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if {"red", "green", "blue"} <= set(v):
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float64)
        pcd.colors = o3d.utility.Vector3dVector(rgb / 255.0 if rgb.max(initial=0) > 1 else rgb)
    o3d.io.write_point_cloud(out, pcd, write_ascii=False)


def _entry(doc: Any, path: Path, kind: str, name: str) -> Any:
    """The `kind` (objects, markers, cameras) entry called `name`; SpecError listing the names there are."""
    items = doc.get(kind) or []
    for item in items:
        if item.get("name") == name:
            return item
    raise SpecError(f"{path}: {kind}: no entry named {name!r}; there are {[i.get('name') for i in items]}")


def edit_set_object(
    doc: Any,
    path: Path,
    name: str,
    *,
    pos: Sequence[float] | None = None,
    euler_deg: Sequence[float] | None = None,
    color: Sequence[float] | None = None,
    mass: float | None = None,
    friction: float | None = None,
    region: dict[str, Sequence[float]] | None = None,
    rename: str | None = None,
) -> None:
    """Change the given fields of an object: pose, colour, mass, friction, its initial-pose region
    (`region`: `x`, `y`, `z`, `yaw_deg` ranges, offsets from the pose) and its name (the task's
    predicate follows a renamed object)."""
    obj = _entry(doc, path, "objects", name)
    if pos is not None or euler_deg is not None:
        if obj.get("pose") is None:
            obj["pose"] = {}
        if pos is not None:
            obj["pose"]["pos"] = _flow(pos)
        if euler_deg is not None:
            if any(euler_deg) or "euler_deg" in obj["pose"]:
                obj["pose"]["euler_deg"] = _flow(euler_deg)
    if color is not None:
        obj["color"] = _flow(color)
    if mass is not None:
        obj["mass"] = float(mass)
    if friction is not None:
        obj["friction"] = float(friction)
    if region is not None:
        if obj.get("randomize") is None:
            obj["randomize"] = {}
        for axis, rng in region.items():
            obj["randomize"][axis] = _flow(rng)
    if rename is not None and rename != name:
        if any(o.get("name") == rename for o in doc.get("objects") or []):
            raise SpecError(f"{path}: objects: an object named {rename!r} already exists")
        obj["name"] = rename
        params = ((doc.get("task") or {}).get("success") or {}).get("params") or {}
        for key, value in list(params.items()):
            if value == name:
                params[key] = rename


def edit_remove_object(doc: Any, path: Path, name: str) -> None:
    """Delete an object (refused while the task's predicate names it)."""
    obj = _entry(doc, path, "objects", name)
    params = ((doc.get("task") or {}).get("success") or {}).get("params") or {}
    if name in params.values():
        raise SpecError(f"{path}: task.success.params names {name!r}; change the task before deleting it")
    doc["objects"].remove(obj)


def edit_set_marker(
    doc: Any,
    path: Path,
    name: str,
    *,
    pos: Sequence[float] | None = None,
    size: Sequence[float] | None = None,
    color: Sequence[float] | None = None,
) -> None:
    """Change the given fields of a marker."""
    marker = _entry(doc, path, "markers", name)
    for key, value in (("pos", pos), ("size", size), ("color", color)):
        if value is not None:
            marker[key] = _flow(value)


def set_object(path: str | Path, name: str, **fields: Any) -> SceneSpec:
    """`edit_set_object` on the file (`dreamtwin scenes set-object`)."""
    return edit_file(path, lambda doc, p: edit_set_object(doc, p, name, **fields))


def remove_object(path: str | Path, name: str) -> SceneSpec:
    """`edit_remove_object` on the file (`dreamtwin scenes remove-object`)."""
    return edit_file(path, lambda doc, p: edit_remove_object(doc, p, name))
