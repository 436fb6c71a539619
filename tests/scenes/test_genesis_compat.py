"""The Genesis internals the twin patches (scenes/genesis_compat.py) are still where it expects them,
and the twin says on stderr what a build is doing (a first build compiles kernels for minutes)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from scenes import genesis_compat
from scenes.genesis_compat import GENESIS_VERSION, kernel_cache_is_warm
from scenes.twin import build_message


def _changed(what: str) -> str:
    return (
        f"genesis-world {version('genesis-world')} is installed; scenes/genesis_compat.py was written against "
        f"{GENESIS_VERSION} and reaches into its internals. Changed: {what}. Update genesis_compat.py for this "
        "release (and GENESIS_VERSION), or install genesis-world==" + GENESIS_VERSION
    )


@pytest.mark.sim
def test_genesis_internals_patched_by_the_twin_still_exist(push_twin):
    missing = genesis_compat.missing_internals(push_twin.scene)
    assert not missing, _changed(", ".join(missing))


@pytest.mark.sim
def test_renderer_light_nodes_match_the_spec_lights(push_twin, push_spec):
    nodes = genesis_compat.light_nodes(push_twin.scene, push_spec.lights)
    assert len(nodes) == len(push_spec.lights), _changed("the rasteriser's light nodes")
    assert all(
        abs(n.light.intensity - li.intensity) < 1e-6 for n, li in zip(nodes, push_spec.lights, strict=True)
    )


@pytest.mark.sim
def test_kernel_cache_is_found_warm_after_a_build(push_twin):
    cache = genesis_compat.kernel_cache_dir()
    assert kernel_cache_is_warm(cache), _changed(f"no compiled kernels (*.qdc) under {cache} after a build")


def test_cpu_name_comes_without_a_probe_process():
    name = genesis_compat.cpu_name()
    assert set(name) == {"brand_raw"} and name["brand_raw"]


def test_build_message_says_cold_or_warm_and_where_the_cache_is(tmp_path):
    cache = tmp_path / "qdcache"
    cold = build_message("push_cube", cache)
    assert "first run compiles physics kernels" in cold and str(cache) in cold
    (cache / "kernel_compilation_manager").mkdir(parents=True)
    assert not kernel_cache_is_warm(cache)  # an empty cache is cold
    (cache / "kernel_compilation_manager" / "T0123.qdc").write_bytes(b"x")
    warm = build_message("push_cube", cache)
    assert kernel_cache_is_warm(cache) and "first run" not in warm and "cached in" in warm
