"""Roll policies out in a World and collect Episodes."""

from __future__ import annotations

import numpy as np

from policy_eval.policies.base import reset_policy
from scenes.errors import ActionError
from scenes.types import Episode, EpisodeStep, Policy, World, as_action_chunk


def rollout(
    world: World,
    policy: Policy,
    seed: int,
    *,
    policy_id: str = "policy",
    privileged: bool = False,
    max_steps: int | None = None,
    world_id: str | None = None,
    scene_hash: str = "",
) -> Episode:
    """One episode from `world.reset(seed)` until the world says done (or `max_steps` actions).

    Non-privileged policies receive observations stripped of simulator state.
    """
    reset_policy(policy, seed)
    obs = world.reset(seed)
    first = obs
    steps: list[EpisodeStep] = []
    while True:
        try:
            chunk = as_action_chunk(policy.act(obs if privileged else obs.without_privileged()), world.action_dim)
        except ActionError as e:
            raise ActionError(f"policy {policy_id!r} at step {len(steps)} (seed {seed}): {e}") from None
        result = world.step(chunk)
        n = len(result.observations)
        for i, (action, o) in enumerate(zip(chunk[:n], result.observations)):
            steps.append(EpisodeStep(np.asarray(action), o, success=result.success and i == n - 1))
        obs = result.last
        if result.done or (max_steps is not None and len(steps) >= max_steps):
            break
    return Episode(
        initial_observation=first,
        steps=steps,
        policy_id=policy_id,
        world_id=world_id or getattr(world, "world_id", type(world).__name__),
        seed=seed,
        scene_hash=scene_hash,
    )
