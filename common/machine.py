"""The machine a result was produced on: CPU model and ISA features, core count, GPU, library
versions. Written beside every `results.json` and benchmark result so that two runs can be told
apart (the twin's outcomes can depend on the CPU: see docs/results.md, "Same numbers on another
machine")."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

# instruction-set features that change floating-point results of JIT-compiled kernels (physics
# kernels and the software rasteriser pick vector widths and fused multiply-add from these), and
# those that decide whether bfloat16 network passes run natively (`native_bfloat16`)
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
    "bf16",
)
# features with which a CPU multiplies bfloat16 matrices natively (x86: AVX-512 BF16, AMX; Arm: BF16)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
PACKAGES = ("dreamtwin", "torch", "numpy", "genesis-world", "quadrants", "gsplat", "diffusers", "lightning")


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and feature flags, read from /proc/cpuinfo (no probe process)."""
    model, flags = platform.processor() or platform.machine(), list[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, flags


def native_bfloat16(flags: list[str] | None = None) -> bool:
    """Whether this CPU (or one with these feature flags) computes bfloat16 matrix products natively.
    Without it, bfloat16 network passes are emulated and run several times slower than float32."""
    return any(f in (cpu_info()[1] if flags is None else flags) for f in BF16_FLAGS)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def machine_fingerprint() -> dict[str, object]:
    """JSON-ready description of this machine. Never imports torch or a simulator: the GPU entry is
    filled only when torch is already imported."""
    import sys

    model, flags = cpu_info()
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": gpu,
        "versions": package_versions(),
    }
