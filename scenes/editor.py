"""Scene authoring in the browser (`dreamtwin scenes edit PATH`): the scene in 3D (table, objects with their
Gaussians, markers, camera frusta, initial-pose regions, the robot's Gaussians once the twin is built),
gizmos and a side panel to move, rotate, recolour, rename, add and delete, a preview of every camera
(Genesis | splat, as `scenes preview`), undo, and save.

Every edit is one of `scenes.authoring`'s document edits (the functions behind the CLI verbs), applied to
the document in memory and validated as a whole scene (strict spec, files, layout) before it is kept; a bad
edit is reported in the panel and changes nothing. `save` writes through `save_document`, refusing a file
changed on disk since it was opened. Genesis work (builds, previews, `validate`) runs on the thread that
called `serve` (the CLI's main thread), queued by the browser's callbacks; the server binds 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DreamTwinError
from scenes.authoring import (
    _yaml,
    check_document,
    document_text,
    edit_add_object,
    edit_import_scan,
    edit_remove_object,
    edit_set_camera,
    edit_set_marker,
    edit_set_object,
    load_document,
    save_document,
)
from scenes.spec import SceneSpec, euler_deg_to_quat

Edit = Callable[[Any, Path], None]


def _rgb255(color: tuple[float, ...] | list[float]) -> tuple[int, int, int]:
    r, g, b = (int(round(255 * float(c))) for c in color[:3])
    return r, g, b


def _euler_from_wxyz(wxyz: np.ndarray) -> list[float]:
    """Extrinsic x-y-z Euler angles in degrees (the spec's convention) of a wxyz quaternion."""
    import viser.transforms as tf

    rpy = tf.SO3(np.asarray(wxyz, np.float64)).as_rpy_radians()
    return [float(np.rad2deg(a)) for a in (rpy.roll, rpy.pitch, rpy.yaw)]


def _camera_wxyz(cam: Any) -> np.ndarray:
    """The camera's orientation (OpenCV axes: x right, y down, z forward), as viser's frusta use."""
    import viser.transforms as tf

    from scenes.camera import PinholeCamera

    return np.asarray(tf.SO3.from_matrix(PinholeCamera.from_spec(cam).R_wc).wxyz)


def splat_arrays(g: Any) -> dict[str, np.ndarray]:
    """Gaussians as viser draws them: centres, 3x3 covariances, RGB in [0, 1], opacities [N, 1]."""
    import torch

    from scenes.splat.render import quat_to_rotmat

    with torch.no_grad():
        rot = quat_to_rotmat(g.quats.float())
        s = torch.exp(g.log_scales.float())
        cov = rot @ torch.diag_embed(s**2) @ rot.transpose(1, 2)
        rgb = (g.sh[:, 0].float() * 0.28209479177387814 + 0.5).clamp(0, 1)
        return {
            "centers": g.means.float().cpu().numpy(),
            "covariances": cov.cpu().numpy(),
            "rgbs": rgb.cpu().numpy(),
            "opacities": torch.sigmoid(g.opacity_logits.float())[:, None].cpu().numpy(),
        }


class SceneEditor:
    """One scene file in the browser. `serve()` blocks, doing the Genesis work the page asks for."""

    def __init__(
        self,
        path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        preview: bool = True,
        seed: int = 0,
    ) -> None:
        import viser

        self.path = Path(path)
        self.doc = load_document(self.path)
        self.spec, _ = check_document(self.doc, self.path)
        self.disk = self.path.read_text()
        self.history: list[str] = []
        self.seed = seed
        self.preview_enabled = preview
        self.twin: Any = None
        self.previews: dict[str, np.ndarray] = {}
        self.preview_count = 0  # previews rendered (tests wait on it)
        self.jobs: queue.Queue[str] = queue.Queue()
        self.lock = threading.RLock()
        self._syncing = False
        self._stop = threading.Event()
        self.server: Any = viser.ViserServer(host=host, port=port, verbose=False)
        self.url = f"http://{host}:{self.server.get_port()}"
        self._gui()
        self._draw()
        self._select(self._entries()[0] if self._entries() else "")
        if preview:
            self.jobs.put("preview")

    # ------------------------------------------------------------------ edits
    def edit(self, what: str, fn: Edit) -> bool:
        """Apply one authoring edit; kept only when the whole scene still validates."""
        with self.lock:
            before = document_text(self.doc)
            try:
                fn(self.doc, self.path)
                spec, _ = check_document(self.doc, self.path)
            except (DreamTwinError, ValueError) as e:
                self.doc = _yaml().load(before)
                self._say(f"**error:** {e}", error=True)
                self._sync_panel()
                return False
            self.history.append(before)
            self.spec = spec
            self._say(f"{what} (unsaved; {len(self.history)} edits to undo)")
            self._draw()
            self._sync_panel()
            if self.preview_enabled:
                self.jobs.put("preview")
            return True

    def undo(self) -> bool:
        with self.lock:
            if not self.history:
                self._say("nothing to undo")
                return False
            self.doc = _yaml().load(self.history.pop())
            self.spec, _ = check_document(self.doc, self.path)
            self._say(f"undone ({len(self.history)} edits left to undo)")
            self._draw()
            self._entries_changed()
            if self.preview_enabled:
                self.jobs.put("preview")
            return True

    def save(self) -> bool:
        with self.lock:
            try:
                save_document(self.doc, self.path, expect=self.disk)
            except DreamTwinError as e:
                self._say(f"**error:** {e}", error=True)
                return False
            self.disk = self.path.read_text()
            self._say(f"saved {self.path}")
            return True

    # ------------------------------------------------------------------ Genesis work (serve's thread)
    def serve(self, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Run until `stop()`: builds, previews and validations the page asks for, one at a time."""
        if on_ready is not None:
            on_ready(self.url)
        while not self._stop.is_set():
            try:
                job = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            if job == "preview":
                while not self.jobs.empty() and self.jobs.queue[0] == "preview":
                    self.jobs.get()  # coalesce: only the latest state is rendered
            try:
                {"preview": self._preview, "validate": self._validate}[job]()
            except Exception as e:  # noqa: BLE001 - shown in the page; the editor keeps serving
                self._say(
                    f"**{job} failed:** {str(e).splitlines()[0] if str(e) else type(e).__name__}", error=True
                )

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()

    def _twin_for(self, spec: SceneSpec) -> Any:
        from scenes.randomization import variable_fields
        from scenes.twin import DigitalTwin

        if self.twin is not None and variable_fields(self.twin.built_spec) == variable_fields(spec):
            self.twin.set_variant(spec)
        else:
            self._say("building the scene in Genesis (the first build compiles kernels: minutes)")
            self.twin = DigitalTwin(spec, render=bool(spec.cameras))
        return self.twin

    def _preview(self) -> None:
        from scenes.twin import preview_images

        with self.lock:
            spec = self.spec
        if not spec.cameras:
            return
        twin = self._twin_for(spec)
        images = preview_images(twin, self.seed)
        with self.lock:
            if spec is not self.spec:
                return  # edited meanwhile: the next job renders the new state
            self.previews = images
            self.preview_count += 1
            for name, img in images.items():
                handle = self.preview_handles.get(name)
                if handle is None:
                    self.preview_handles[name] = self.server.gui.add_image(
                        img, label=f"{name}: Genesis | splat", order=100
                    )
                else:
                    handle.image = img
            for name in set(self.preview_handles) - set(images):
                self.preview_handles.pop(name).remove()
            self._draw_robot(twin)
            self._say(f"preview at seed {self.seed}", keep_error=True)

    def _validate(self) -> None:
        from scenes.twin import DigitalTwin

        with self.lock:
            spec = self.spec
        self._say("validating: building the scene in Genesis")
        twin = DigitalTwin(spec, render=False)
        twin.reset(seed=self.seed)
        twin.step(np.zeros((1, twin.action_dim), np.float32))
        self._say(f"valid: built in {twin.build_seconds:.1f} s; success at reset: {twin.success()}")

    # ------------------------------------------------------------------ the page
    def _say(self, text: str, *, error: bool = False, keep_error: bool = False) -> None:
        if keep_error and self.status.content.startswith("**error"):
            return
        self.status.content = text
        if error:
            self.last_error = text

    def _entries(self) -> list[str]:
        return (
            [f"object:{o.name}" for o in self.spec.objects]
            + [f"marker:{m.name}" for m in self.spec.markers]
            + [f"camera:{c.name}" for c in self.spec.cameras]
        )

    def _gui(self) -> None:
        gui = self.server.gui
        self.last_error = ""
        self.status: Any = gui.add_markdown(f"editing `{self.path}`", order=0)
        self.selector = gui.add_dropdown("select", self._entries() or ["(none)"], order=1)
        self.selector.on_update(lambda _: self._select(self.selector.value))
        with gui.add_folder("selected", order=2):
            self.f_name = gui.add_text("name", "")
            self.f_pos = gui.add_vector3("position", (0.0, 0.0, 0.0), step=0.001)
            self.f_rot = gui.add_vector3("rotation (deg)", (0.0, 0.0, 0.0), step=1.0)
            self.f_lookat = gui.add_vector3("look at", (0.0, 0.0, 0.0), step=0.001)
            self.f_fov = gui.add_number("fov (deg)", 45.0, min=2.0, max=178.0, step=1.0)
            self.f_size = gui.add_vector3("size", (0.1, 0.1, 0.01), step=0.001)
            self.f_color = gui.add_rgb("colour", (200, 30, 30))
            self.f_mass = gui.add_number("mass (kg)", 0.1, min=1e-4, step=0.01)
            self.f_friction = gui.add_number("friction", 1.0, min=1e-3, step=0.05)
            self.f_rx = gui.add_vector2("region x (m)", (0.0, 0.0), step=0.005)
            self.f_ry = gui.add_vector2("region y (m)", (0.0, 0.0), step=0.005)
            self.b_delete = gui.add_button("delete object", color="red")
        for key, field in self._fields().items():
            if key != "delete":
                field.on_update(lambda event, k=key: self._field_changed(k))
        self.b_delete.on_click(lambda _: self._delete())
        with gui.add_folder("add object", order=3, expand_by_default=False):
            self.a_name = gui.add_text("new name", "box1")
            self.a_kind = gui.add_dropdown(
                "kind", ["box", "sphere", "cylinder", "mesh", "splat", "point_cloud", "scan"]
            )
            self.a_size = gui.add_text("size", "0.05, 0.05, 0.05")
            self.a_file = gui.add_text("file", "")
            gui.add_button("add").on_click(lambda _: self._add())
        with gui.add_folder("scene", order=4):
            self.g_seed = gui.add_number("seed", self.seed, step=1)
            gui.add_button("reset at seed").on_click(lambda _: self._reset_at_seed())
            gui.add_button("validate (Genesis)").on_click(lambda _: self.jobs.put("validate"))
            gui.add_button("undo").on_click(lambda _: self.undo())
            gui.add_button("save", color="green").on_click(lambda _: self.save())
        self.preview_handles: dict[str, Any] = {}
        self.gizmo = self.server.scene.add_transform_controls("/gizmo", scale=0.15, depth_test=False)
        self.gizmo.on_drag_end(lambda _: self._gizmo_moved())
        t = self.spec.table
        self.server.initial_camera.position = (t.center_xy[0] + 0.9, t.center_xy[1] + 0.9, 0.8)
        self.server.initial_camera.look_at = (t.center_xy[0], t.center_xy[1], 0.0)

    def _fields(self) -> dict[str, Any]:
        return {
            "name": self.f_name,
            "pos": self.f_pos,
            "rot": self.f_rot,
            "lookat": self.f_lookat,
            "fov": self.f_fov,
            "size": self.f_size,
            "color": self.f_color,
            "mass": self.f_mass,
            "friction": self.f_friction,
            "rx": self.f_rx,
            "ry": self.f_ry,
            "delete": self.b_delete,
        }

    def _reset_at_seed(self) -> None:
        self.seed = int(self.g_seed.value)
        self.jobs.put("preview")

    def _selected(self) -> tuple[str, Any] | None:
        value = self.selector.value
        if ":" not in value:
            return None
        kind, name = value.split(":", 1)
        items: dict[str, list[Any]] = {
            "object": list(self.spec.objects),
            "marker": list(self.spec.markers),
            "camera": list(self.spec.cameras),
        }
        return next(((kind, i) for i in items.get(kind, []) if i.name == name), None)

    def _select(self, value: str) -> None:
        with self.lock:
            if value and self.selector.value != value:
                self.selector.value = value
            self._sync_panel()

    def _entries_changed(self, select: str | None = None) -> None:
        entries = self._entries() or ["(none)"]
        self._syncing = True
        try:
            self.selector.options = entries
            self.selector.value = select if select in entries else entries[0]
        finally:
            self._syncing = False
        self._sync_panel()

    def _sync_panel(self) -> None:
        """The panel and the gizmo show the selected entry as the document holds it."""
        sel = self._selected()
        self._syncing = True
        try:
            visible: dict[str | None, set[str]] = {
                "object": {"name", "pos", "rot", "color", "mass", "friction", "rx", "ry", "delete"},
                "marker": {"pos", "size", "color"},
                "camera": {"pos", "lookat", "fov"},
                None: set(),
            }
            kind = sel[0] if sel else None
            fields = self._fields()
            for key, handle in fields.items():
                handle.visible = key in visible[kind]
            self.gizmo.visible = sel is not None
            if sel is None:
                return
            kind, item = sel
            if kind == "object":
                self.f_name.value = item.name
                self.f_pos.value = tuple(item.pose.pos)
                self.f_rot.value = tuple(item.pose.euler_deg)
                self.f_color.value = _rgb255(item.color)
                self.f_mass.value = item.mass
                self.f_friction.value = item.friction
                self.f_rx.value = tuple(item.randomize.x)
                self.f_ry.value = tuple(item.randomize.y)
                self.gizmo.position = tuple(item.pose.pos)
                self.gizmo.wxyz = tuple(euler_deg_to_quat(item.pose.euler_deg))
            elif kind == "marker":
                self.f_pos.value = tuple(item.pos)
                self.f_size.value = tuple(item.size)
                self.f_color.value = _rgb255(item.color)
                self.gizmo.position, self.gizmo.wxyz = tuple(item.pos), (1.0, 0.0, 0.0, 0.0)
            else:
                self.f_pos.value = tuple(item.pos)
                self.f_lookat.value = tuple(item.lookat)
                self.f_fov.value = item.fov
                self.gizmo.position, self.gizmo.wxyz = tuple(item.pos), tuple(_camera_wxyz(item))
        finally:
            self._syncing = False

    def _field_changed(self, field: str) -> None:
        if self._syncing:
            return
        sel = self._selected()
        if sel is None:
            return
        kind, item = sel
        name = item.name
        f = self
        rgb = [round(c / 255, 4) for c in f.f_color.value]
        if kind == "object":
            fn: Edit | None = {
                "name": lambda d, p: edit_set_object(d, p, name, rename=f.f_name.value.strip()),
                "pos": lambda d, p: edit_set_object(d, p, name, pos=[round(v, 5) for v in f.f_pos.value]),
                "rot": lambda d, p: edit_set_object(
                    d, p, name, euler_deg=[round(v, 3) for v in f.f_rot.value]
                ),
                "color": lambda d, p: edit_set_object(d, p, name, color=rgb),
                "mass": lambda d, p: edit_set_object(d, p, name, mass=f.f_mass.value),
                "friction": lambda d, p: edit_set_object(d, p, name, friction=f.f_friction.value),
                "rx": lambda d, p: edit_set_object(d, p, name, region={"x": list(f.f_rx.value)}),
                "ry": lambda d, p: edit_set_object(d, p, name, region={"y": list(f.f_ry.value)}),
            }.get(field)
        elif kind == "marker":
            fn = {
                "pos": lambda d, p: edit_set_marker(d, p, name, pos=[round(v, 5) for v in f.f_pos.value]),
                "size": lambda d, p: edit_set_marker(d, p, name, size=list(f.f_size.value)),
                "color": lambda d, p: edit_set_marker(d, p, name, color=rgb),
            }.get(field)
        else:
            fn = {
                "pos": lambda d, p: edit_set_camera(d, p, name, pos=[round(v, 5) for v in f.f_pos.value]),
                "lookat": lambda d, p: edit_set_camera(
                    d, p, name, lookat=[round(v, 5) for v in f.f_lookat.value]
                ),
                "fov": lambda d, p: edit_set_camera(d, p, name, fov=f.f_fov.value),
            }.get(field)
        if fn is None:
            return
        if self.edit(f"{kind} {name}: {field}", fn) and field == "name":
            self._entries_changed(select=f"object:{f.f_name.value.strip()}")

    def _gizmo_moved(self) -> None:
        sel = self._selected()
        if sel is None:
            return
        kind, item = sel
        pos = [round(float(v), 5) for v in self.gizmo.position]
        if kind == "object":
            euler = [round(v, 3) for v in _euler_from_wxyz(np.asarray(self.gizmo.wxyz))]
            self.edit(
                f"object {item.name}: moved",
                lambda d, p: edit_set_object(d, p, item.name, pos=pos, euler_deg=euler),
            )
        elif kind == "marker":
            self.edit(f"marker {item.name}: moved", lambda d, p: edit_set_marker(d, p, item.name, pos=pos))
        else:
            import viser.transforms as tf

            forward = tf.SO3(np.asarray(self.gizmo.wxyz)).as_matrix()[:, 2]
            dist = float(np.linalg.norm(np.subtract(item.lookat, item.pos)))
            lookat = [round(float(v), 5) for v in np.asarray(pos) + forward * dist]
            self.edit(
                f"camera {item.name}: moved",
                lambda d, p: edit_set_camera(d, p, item.name, pos=pos, lookat=lookat),
            )

    def _delete(self) -> None:
        sel = self._selected()
        if sel is None or sel[0] != "object":
            return
        name = sel[1].name
        if self.edit(f"deleted object {name}", lambda d, p: edit_remove_object(d, p, name)):
            self._entries_changed()

    def _add(self) -> None:
        name, kind, file = self.a_name.value.strip(), self.a_kind.value, self.a_file.value.strip() or None
        if kind == "scan":
            fn: Edit = lambda d, p: edit_import_scan(d, p, file or "", name)  # noqa: E731
        else:
            try:
                size = [float(x) for x in self.a_size.value.replace(",", " ").split()] or None
            except ValueError:
                self._say(f"**error:** size {self.a_size.value!r}: expected numbers", error=True)
                return
            fn = lambda d, p: edit_add_object(d, p, name, kind, size=size, file=file)  # noqa: E731
        if self.edit(f"added {kind} {name}", fn):
            self._entries_changed(select=f"object:{name}")

    # ------------------------------------------------------------------ the 3D view
    def _draw(self) -> None:
        """(Re)draw the scene's bodies from the spec (the robot comes with the first build)."""
        from scenes.splat.sample import load_mesh, primitive_mesh

        scene, spec = self.server.scene, self.spec
        for handle in getattr(self, "_nodes", []):
            handle.remove()
        nodes: list[Any] = []
        t = spec.table
        nodes.append(
            scene.add_box(
                "/table",
                color=_rgb255(t.color),
                dimensions=t.size,
                position=(t.center_xy[0], t.center_xy[1], -t.size[2] / 2),
            )
        )
        for o in spec.objects:
            wxyz = tuple(euler_deg_to_quat(o.pose.euler_deg))
            name = f"/objects/{o.name}"
            if o.appearance is not None:
                from scenes.splat.twin_renderer import object_appearance

                g = object_appearance(o, spec.splat.spacing)
                nodes.append(
                    scene.add_gaussian_splats(name, **splat_arrays(g), position=o.pose.pos, wxyz=wxyz)
                )
            elif o.shape == "box":
                nodes.append(
                    scene.add_box(
                        name, color=_rgb255(o.color), dimensions=o.size, position=o.pose.pos, wxyz=wxyz
                    )
                )
            else:
                if o.shape == "mesh":
                    assert o.mesh is not None
                    mesh = load_mesh(self.path.parent / o.mesh, o.size[0])
                else:
                    mesh = primitive_mesh(o.shape, o.size)
                nodes.append(
                    scene.add_mesh_simple(
                        name,
                        np.asarray(mesh.vertices, np.float32),
                        np.asarray(mesh.faces, np.uint32),
                        color=_rgb255(o.color),
                        position=o.pose.pos,
                        wxyz=wxyz,
                    )
                )
            r = o.randomize
            extent = (r.x[1] - r.x[0], r.y[1] - r.y[0])
            if max(extent) > 0:
                centre = (o.pose.pos[0] + sum(r.x) / 2, o.pose.pos[1] + sum(r.y) / 2, 0.001)
                nodes.append(
                    scene.add_box(
                        f"/regions/{o.name}",
                        color=(255, 170, 0),
                        dimensions=(max(extent[0], 1e-3), max(extent[1], 1e-3), 0.002),
                        wireframe=True,
                        position=centre,
                    )
                )
        for m in spec.markers:
            nodes.append(
                scene.add_box(f"/markers/{m.name}", color=_rgb255(m.color), dimensions=m.size, position=m.pos)
            )
        # a wrist camera is drawn where the hand holds it, once the twin is built (with the robot)
        posed = {c.name: c for c in self.twin.camera_specs()} if self.twin is not None else {}
        for c in spec.cameras:
            if c.attach:
                if c.name not in posed:
                    continue
                c = posed[c.name]
            w, h = c.resolution
            nodes.append(
                scene.add_camera_frustum(
                    f"/cameras/{c.name}",
                    fov=float(np.deg2rad(c.fov)),
                    aspect=w / h,
                    scale=0.08,
                    color=(150, 80, 190),
                    position=c.pos,
                    wxyz=tuple(_camera_wxyz(c)),
                )
            )
        for i, light in enumerate(spec.lights):
            where = (
                light.pos
                if light.type == "point"
                else tuple(
                    np.array([t.center_xy[0], t.center_xy[1], 0.0])
                    - 0.6 * np.asarray(light.dir) / np.linalg.norm(light.dir)
                )
            )
            nodes.append(
                scene.add_label(
                    f"/lights/{i}", f"light {i} ({light.type}, {light.intensity:g})", position=where
                )
            )
        self._nodes = nodes

    def _draw_robot(self, twin: Any) -> None:
        names = [b.name for b in twin.splat_renderer.bodies if b.name.startswith("robot:")]
        if names and not getattr(self, "_robot_drawn", False):
            g = twin.splat_renderer.world_gaussians(names)
            self.server.scene.add_gaussian_splats("/robot", **splat_arrays(g))
            self._robot_drawn = True


def edit_scene(path: str | Path, *, host: str = "127.0.0.1", port: int = 8080, preview: bool = True) -> None:
    """`dreamtwin scenes edit`: serve until interrupted."""
    editor = SceneEditor(path, host=host, port=port, preview=preview)
    try:
        editor.serve(on_ready=lambda url: print(f"editing {path}: open {url} (Ctrl-C to stop)", flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        editor.stop()
