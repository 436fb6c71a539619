"""The policy registry and helpers shared by every policy family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.errors import SpecError
from common.registry import Registry
from common.types import Policy
from scenes.spec import SceneSpec


@dataclass(frozen=True)
class PolicyInfo:
    """A registered policy: its factory and whether it reads privileged simulator state."""

    factory: Callable[[SceneSpec, int], Policy]
    privileged: bool
    description: str
    skill_rank: int | None = None  # designed skill order within a family (0 = best), for sanity checks


POLICIES: Registry[PolicyInfo] = Registry("policy")


def register_policy(
    name: str,
    factory: Callable[[SceneSpec, int], Policy],
    *,
    privileged: bool,
    description: str,
    skill_rank: int | None = None,
) -> None:
    POLICIES.register(name, PolicyInfo(factory, privileged, description, skill_rank), description=description)


def policy_yaml_type(name: str) -> str | None:
    """The `type:` of a policy YAML file `name` (`up_mpc`, `remote`), or None when `name` is not one."""
    from pathlib import Path

    p = Path(name)
    if p.suffix not in (".yaml", ".yml") or not p.is_file():
        return None
    import yaml

    try:
        kind = (yaml.safe_load(p.read_text()) or {}).get("type")
    except (yaml.YAMLError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def policy_info(name: str) -> PolicyInfo:
    """The registered policy `name`, a trained checkpoint directory given by path (BC CNN or TD3+BC), a
    UP-MPC YAML file (`policy_eval.mpc`) or an exploration YAML (`type: noisy`, `policy_eval.policies.noisy`)
    around either, or a policy on a server (`remote:ws://host:port` or a `type: remote` YAML file,
    `policy_eval.remote`)."""
    if name in POLICIES:
        return POLICIES.get(name)
    from pathlib import Path

    from policy_eval.mpc import is_mpc_config
    from policy_eval.policies.bc import is_bc_checkpoint
    from policy_eval.policies.td3bc import is_td3bc_checkpoint
    from policy_eval.remote import is_remote

    if is_remote(name) or policy_yaml_type(name) == "remote":
        from policy_eval.remote import make_remote_policy, remote_config

        rcfg = remote_config(name)
        return PolicyInfo(
            lambda spec, seed: make_remote_policy(name, spec, seed),
            privileged=rcfg.privileged,
            description=f"policy served at {rcfg.url}",
        )
    if is_mpc_config(name):
        from policy_eval.mpc import load_mpc_config, make_mpc_policy

        cfg = load_mpc_config(name)
        policy_info(cfg.base)  # the base must exist
        return PolicyInfo(
            lambda spec, seed: make_mpc_policy(name, spec, seed),
            privileged=cfg.privileged,
            description=f"UP-MPC ({cfg.mode}) around {cfg.base}",
        )

    if policy_yaml_type(name) == "noisy":
        from policy_eval.policies.noisy import load_noisy_config, make_noisy_policy

        ncfg = load_noisy_config(name)
        base = policy_info(ncfg.base)  # the base must exist
        return PolicyInfo(
            lambda spec, seed: make_noisy_policy(name, spec, seed),
            privileged=base.privileged,
            description=f"{ncfg.base} with Gaussian action noise (std {ncfg.action_std})",
        )
    if is_bc_checkpoint(name):
        return PolicyInfo(
            lambda spec, seed: _load_bc(name), privileged=False, description=f"BC CNN from {name}"
        )
    if is_td3bc_checkpoint(name):
        return PolicyInfo(
            lambda spec, seed: _load_td3bc(name), privileged=True, description=f"TD3+BC from {name}"
        )
    if Path(name).exists():
        raise SpecError(
            f"{name}: not a policy checkpoint (a directory with config.json of type bc_cnn or td3bc)"
        )
    return POLICIES.get(name)  # the unknown-name error listing what is registered


def _load_bc(path: str) -> Policy:
    from policy_eval.policies.bc import BCPolicy

    return BCPolicy.from_pretrained(path)


def _load_td3bc(path: str) -> Policy:
    from policy_eval.policies.td3bc import TD3BCPolicy

    return TD3BCPolicy.from_pretrained(path)


def make_policy(name: str, spec: SceneSpec, seed: int = 0) -> Policy:
    """Build a policy by registered name or checkpoint path."""
    return policy_info(name).factory(spec, seed)
