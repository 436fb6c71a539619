"""Domain randomisation: ranges declared in YAML, one variant of a SceneSpec drawn per seed.

    rnd = load_randomization("configs/randomization/push_cube_default.yaml")
    variant = sample_variation(spec, rnd, seed=17)
    twin.set_variant(variant.spec); obs = twin.reset(seed=17)
    variant.params  # {"cube.hue_deg": 4.2, ..., "camera.side.dz": -0.004}

What varies: object initial-pose ranges, object and table colours (HSV jitter), friction and mass
(scales), each light's intensity and direction, each camera's position and look-at point. Every
value is drawn from the seed alone, in a fixed order, so a variant is reproducible anywhere; the
parameter vector always has the same names for a given scene (degenerate ranges give the nominal
value), which lets datasets store it as a fixed-size feature.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from pydantic import Field, field_validator

from common.config import Strict, load_model
from scenes.spec import Color, PoseRandomization, Range, SceneSpec

RANDOMIZATION_VERSION: Final = 1


def _ordered(r: Range) -> Range:
    if r[0] > r[1]:
        raise ValueError(f"range low must be <= high, got {list(r)}")
    return r


def _positive_scale(r: Range) -> Range:
    _ordered(r)
    if r[0] <= 0:
        raise ValueError(f"a scale range must be positive, got {list(r)}")
    return r


def _non_negative(r: Range) -> Range:
    _ordered(r)
    if r[0] < 0:
        raise ValueError(f"a magnitude range must be >= 0, got {list(r)}")
    return r


class ColorJitter(Strict):
    """HSV jitter of a nominal colour: hue shifted by degrees, saturation and value scaled."""

    hue_deg: Range = (0.0, 0.0)
    saturation_scale: Range = (1.0, 1.0)
    value_scale: Range = (1.0, 1.0)

    _h = field_validator("hue_deg")(lambda cls, v: _ordered(v))
    _s = field_validator("saturation_scale", "value_scale")(lambda cls, v: _positive_scale(v))


class LightJitter(Strict):
    intensity_scale: Range = (1.0, 1.0)
    direction_deg: Range = Field((0.0, 0.0), description="tilt of each directional light, random azimuth")

    _i = field_validator("intensity_scale")(lambda cls, v: _positive_scale(v))
    _d = field_validator("direction_deg")(lambda cls, v: _non_negative(v))


class CameraJitter(Strict):
    position_m: Range = Field((0.0, 0.0), description="length of a random-direction offset of the camera")
    lookat_m: Range = Field(
        (0.0, 0.0), description="length of a random-direction offset of the look-at point"
    )

    _p = field_validator("position_m", "lookat_m")(lambda cls, v: _non_negative(v))


class RandomizationSpec(Strict):
    version: Literal[1] = RANDOMIZATION_VERSION
    object_pose: PoseRandomization | None = Field(
        None, description="replaces every movable object's `randomize` ranges; none keeps the scene's"
    )
    object_color: ColorJitter = ColorJitter()
    table_color: ColorJitter = ColorJitter()
    friction_scale: Range = (1.0, 1.0)
    mass_scale: Range = (1.0, 1.0)
    light: LightJitter = LightJitter()
    camera: CameraJitter = CameraJitter()

    _s = field_validator("friction_scale", "mass_scale")(lambda cls, v: _positive_scale(v))


def load_randomization(path: str | Path) -> RandomizationSpec:
    return load_model(RandomizationSpec, path)


@dataclass(frozen=True)
class Variation:
    """One draw: the varied SceneSpec and the drawn parameters (stable names, float values)."""

    spec: SceneSpec
    params: dict[str, float]


def _jitter_color(
    c: Color, j: ColorJitter, rng: np.random.Generator, key: str, params: dict[str, float]
) -> Color:
    dh, ss, vs = rng.uniform(*j.hue_deg), rng.uniform(*j.saturation_scale), rng.uniform(*j.value_scale)
    params.update({f"{key}.hue_deg": dh, f"{key}.saturation_scale": ss, f"{key}.value_scale": vs})
    if dh == 0.0 and ss == 1.0 and vs == 1.0:
        return c  # no round trip through HSV: the nominal colour stays bit-exact
    h, s, v = colorsys.rgb_to_hsv(*c)
    rgb = colorsys.hsv_to_rgb((h + dh / 360.0) % 1.0, min(s * ss, 1.0), min(v * vs, 1.0))
    return tuple(float(np.clip(x, 0.0, 1.0)) for x in rgb)  # type: ignore[return-value]


def _random_offset(rng: np.random.Generator, r: Range) -> np.ndarray:
    d = rng.normal(size=3)
    return d / max(float(np.linalg.norm(d)), 1e-12) * rng.uniform(*r)


def _tilt(direction: np.ndarray, angle_deg: float, azimuth: float) -> np.ndarray:
    """`direction` rotated by `angle_deg` towards the perpendicular at `azimuth` (radians)."""
    d = direction / np.linalg.norm(direction)
    a = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, a)
    u /= np.linalg.norm(u)
    w = np.cross(d, u)
    perp = np.cos(azimuth) * u + np.sin(azimuth) * w
    t = np.deg2rad(angle_deg)
    return np.linalg.norm(direction) * (np.cos(t) * d + np.sin(t) * perp)


def sample_variation(spec: SceneSpec, rnd: RandomizationSpec | None, seed: int) -> Variation:
    """The variant of `spec` drawn from `seed` (the nominal spec when `rnd` is None)."""
    rnd = rnd or RandomizationSpec()
    rng = np.random.default_rng([seed, 0xD0A1])
    params: dict[str, float] = {}
    d = spec.model_dump()
    for o, od in zip(spec.objects, d["objects"], strict=True):
        od["color"] = _jitter_color(o.color, rnd.object_color, rng, o.name, params)
        fs, ms = rng.uniform(*rnd.friction_scale), rng.uniform(*rnd.mass_scale)
        params.update({f"{o.name}.friction_scale": fs, f"{o.name}.mass_scale": ms})
        od["friction"], od["mass"] = o.friction * fs, o.mass * ms
        if rnd.object_pose is not None and not o.fixed:
            od["randomize"] = rnd.object_pose.model_dump()
    d["table"]["color"] = _jitter_color(spec.table.color, rnd.table_color, rng, "table", params)
    fs = rng.uniform(*rnd.friction_scale)
    params["table.friction_scale"] = fs
    d["table"]["friction"] = spec.table.friction * fs
    for i, (li, ld) in enumerate(zip(spec.lights, d["lights"], strict=True)):
        s, tilt, az = (
            rng.uniform(*rnd.light.intensity_scale),
            rng.uniform(*rnd.light.direction_deg),
            rng.uniform(0, 2 * np.pi),
        )
        params.update({f"light{i}.intensity_scale": s, f"light{i}.tilt_deg": tilt})
        ld["intensity"] = li.intensity * s
        if li.type == "directional":
            ld["dir"] = tuple(_tilt(np.asarray(li.dir, dtype=np.float64), tilt, az).tolist())
    for c, cd in zip(spec.cameras, d["cameras"], strict=True):
        dp, dl = _random_offset(rng, rnd.camera.position_m), _random_offset(rng, rnd.camera.lookat_m)
        for k, v in zip("xyz", dp, strict=True):
            params[f"camera.{c.name}.d{k}"] = float(v)
        for k, v in zip("xyz", dl, strict=True):
            params[f"camera.{c.name}.lookat_d{k}"] = float(v)
        cd["pos"] = tuple((np.asarray(c.pos) + dp).tolist())
        cd["lookat"] = tuple((np.asarray(c.lookat) + dl).tolist())
    variant = SceneSpec.model_validate(d)
    return Variation(spec=variant, params={k: float(v) for k, v in params.items()})


def physics_scales(spec: SceneSpec, nominal: SceneSpec) -> dict[str, float]:
    """The physics scale factors (`OBJECT.friction_scale`, `OBJECT.mass_scale`, `table.friction_scale`, as
    `sample_variation` names them) that turn `nominal` into `spec`: all 1.0 for the nominal scene itself."""
    out: dict[str, float] = {}
    for o in spec.objects:
        n = nominal.object(o.name)
        out[f"{o.name}.friction_scale"] = o.friction / n.friction
        out[f"{o.name}.mass_scale"] = o.mass / n.mass
    out["table.friction_scale"] = spec.table.friction / nominal.table.friction
    return out


def variable_fields(spec: SceneSpec) -> dict[str, Any]:
    """The spec with every field a variant may change removed: two specs with equal results can
    share one built twin."""
    d = spec.model_dump(mode="json")
    for od in d["objects"]:
        for k in ("color", "mass", "friction", "pose", "randomize"):
            od.pop(k)
    d["table"].pop("color")
    d["table"].pop("friction")
    for md in d["markers"]:
        md.pop("color")
    for cd in d["cameras"]:
        for k in ("pos", "lookat", "up"):
            cd.pop(k)
    for ld in d["lights"]:
        for k in ("intensity", "dir", "pos", "color"):
            ld.pop(k)
    return d
