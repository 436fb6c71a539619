"""Every place the twin reaches past Genesis's public API, in one module.

Genesis offers no public call to re-colour a built body in its rasteriser, to move or re-tint a
light after build, to make the rasteriser read materials again, or to say where its kernel cache
lives; these functions do it through attributes of Genesis's (and its pyrender fork's) internals.
They were written against genesis-world `GENESIS_VERSION`. `missing_internals(scene)` lists
whichever of those attributes a built scene lacks, and tests/scenes/test_genesis_compat.py fails
naming them when a Genesis release moves them.

Also here: Genesis reads the CPU's name through py-cpuinfo, whose full probe starts a helper
process that was seen to spin forever inside spawned worker processes; `patch_cpuinfo` makes it
read the name from /proc instead.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import UsageError
from common.machine import cpu_info

if TYPE_CHECKING:
    from scenes.spec import LightSpec

GENESIS_VERSION = "1.4.5"  # the genesis-world release these shims are written and tested against


# ---------------------------------------------------------------------- CPU name
def cpu_name() -> dict[str, str]:
    """py-cpuinfo's `get_cpu_info()` reduced to the one key Genesis reads, without a probe process."""
    return {"brand_raw": cpu_info()[0] or "cpu"}


def patch_cpuinfo() -> None:
    """Make py-cpuinfo (as Genesis calls it) answer from `cpu_name`; call before importing genesis."""
    import cpuinfo

    cpuinfo.get_cpu_info = cpu_name


# ---------------------------------------------------------------------- rasteriser
def _renderer_scene(scene: Any) -> Any:
    """The pyrender scene behind a built Genesis scene's rasteriser, None without cameras."""
    ctx = scene.visualizer.context
    return None if ctx is None else ctx._scene


def recolor(scene: Any, entity: Any, color: tuple[float, float, float]) -> None:
    """Set a body's colour in Genesis's rasteriser: the material's base-colour factor scales the
    vertex colours it was built with."""
    ctx = scene.visualizer.context
    if ctx is None:
        return
    for vg in entity.vgeoms:
        node = ctx.rigid_nodes.get(vg.uid)
        if node is None:
            continue
        for prim in node.mesh.primitives:
            base = np.ones(3) if prim.color_0 is None else np.asarray(prim.color_0[0][:3], dtype=np.float64)
            factor = np.asarray(color, dtype=np.float64) / np.maximum(base, 1.0 / 255)
            prim.material.baseColorFactor = np.array([*factor, 1.0], dtype=np.float32)


def light_nodes(scene: Any, lights: list[LightSpec]) -> list[Any]:
    """The rasteriser's light node of each entry of `lights` (the lights the scene was built with),
    matched by kind and intensity."""
    nodes = list(_renderer_scene(scene).light_nodes)
    matched: list[Any] = []
    for li in lights:
        kind = "DirectionalLight" if li.type == "directional" else "PointLight"
        match = [
            n
            for n in nodes
            if type(n.light).__name__ == kind
            and n not in matched
            and abs(n.light.intensity - li.intensity) < 1e-6
        ]
        if not match:
            raise UsageError(f"no renderer light matches lights entry {li.model_dump()}")
        matched.append(match[0])
    return matched


def set_light(scene: Any, node: Any, light: LightSpec) -> None:
    """Give a rasteriser light node the intensity, colour and direction (or position) of `light`."""
    from genesis.utils.geom import z_up_to_R

    node.light.intensity = light.intensity
    node.light.color = np.asarray(light.color, dtype=np.float32)
    pose = np.eye(4)
    if light.type == "directional":
        pose[:3, :3] = z_up_to_R(-np.asarray(light.dir, dtype=np.float32))
    else:
        pose[:3, 3] = light.pos
    _renderer_scene(scene).set_pose(node, pose)


def refresh_renderer(scene: Any) -> None:
    """Make the rasteriser read materials and lights again: it caches them per scene revision."""
    pyr = _renderer_scene(scene)
    pyr._meshes_updated = True
    pyr.bump_revision()


# ---------------------------------------------------------------------- kernel cache
def kernel_cache_dir() -> Path:
    """Where Quadrants (Genesis's kernel compiler) caches compiled kernels; Genesis must be initialised."""
    try:
        from quadrants.lang import impl

        return Path(impl.get_runtime().prog.config().offline_cache_file_path)
    except (ImportError, AttributeError):
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(root) / "quadrants" / "qdcache"


def kernel_cache_is_warm(cache_dir: Path) -> bool:
    """Whether `cache_dir` holds compiled kernels (*.qdc files), i.e. a build will not compile them all."""
    return cache_dir.is_dir() and next(cache_dir.rglob("*.qdc"), None) is not None


# ---------------------------------------------------------------------- self-check
def missing_internals(scene: Any) -> list[str]:
    """The Genesis internals used above that a built scene with a camera does not have ([] when all
    are there)."""
    missing: list[str] = []

    def need(obj: Any, *names: str, where: str) -> bool:
        absent = [n for n in names if not hasattr(obj, n)]
        missing.extend(f"{where}.{n}" for n in absent)
        return not absent

    try:
        import genesis.utils.geom as geom
        import genesis.utils.misc as misc
    except ImportError as e:
        return [f"genesis.utils ({e})"]
    need(geom, "z_up_to_R", where="genesis.utils.geom")
    need(misc, "cpuinfo", where="genesis.utils.misc")
    if "scale_inertia" not in inspect.signature(scene.sim.rigid_solver.set_links_mass).parameters:
        missing.append("RigidSolver.set_links_mass(scale_inertia=...)")
    if not need(scene.visualizer, "context", where="scene.visualizer") or scene.visualizer.context is None:
        return missing + ["scene.visualizer.context (build the scene with a camera)"]
    ctx = scene.visualizer.context
    if need(ctx, "rigid_nodes", "_scene", where="RasterizerContext"):
        pyr = ctx._scene
        if need(pyr, "light_nodes", "set_pose", "bump_revision", "_meshes_updated", where="pyrender.Scene"):
            for node in list(pyr.light_nodes)[:1]:
                if need(node, "light", where="light node"):
                    need(node.light, "intensity", "color", where="light")
        for node in list(ctx.rigid_nodes.values())[:1]:
            if need(node, "mesh", where="rigid node") and need(
                node.mesh, "primitives", where="rigid node.mesh"
            ):
                for prim in node.mesh.primitives[:1]:
                    if need(prim, "color_0", "material", where="primitive"):
                        need(prim.material, "baseColorFactor", where="primitive.material")
    for ent in scene.entities[:1]:
        if need(ent, "vgeoms", where="entity"):
            for vg in ent.vgeoms[:1]:
                need(vg, "uid", where="vgeom")
    try:
        from quadrants.lang import impl

        impl.get_runtime().prog.config().offline_cache_file_path  # noqa: B018
    except (ImportError, AttributeError) as e:
        missing.append(f"quadrants offline_cache_file_path ({e})")
    return missing
