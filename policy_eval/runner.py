"""Roll policies out in a World and collect Episodes: one at a time, or many in lock-step through a
world's batched API (`policy_eval.worlds`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import ActionError
from common.types import BatchedWorld, Episode, EpisodeStep, Policy, World, as_action_chunk

KEPT_INFO = ("success_prob", "uncertainty", "latency_s", "interventions", "stopped", "success_known")


def step_info(info: dict[str, Any]) -> dict[str, Any]:
    """What an episode keeps of a step's info: a learned world's success probability and uncertainty, a
    robot's policy latency, safety interventions, why it was stopped and whether it could judge success."""
    return {k: info[k] for k in KEPT_INFO if k in info}


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
    after_success: int = 0,
) -> Episode:
    """One episode from `world.reset(seed)` until the world says done (or `max_steps` actions).

    Non-privileged policies receive observations stripped of simulator state. With `after_success`, an
    episode that succeeds goes on for that many more actions (within `max_steps`) although the world says
    done: a dataset then shows what follows a success (a lifted cube held up), not only its first frame.
    """
    policy.reset(seed)
    obs = world.reset(seed)
    first = obs
    steps: list[EpisodeStep] = []
    solved_at: int | None = None
    while True:
        try:
            chunk = as_action_chunk(
                policy.act(obs if privileged else obs.without_privileged()), world.action_dim
            )
        except ActionError as e:
            raise ActionError(f"policy {policy_id!r} at step {len(steps)} (seed {seed}): {e}") from None
        result = world.step(chunk)
        n = len(result.observations)
        for i, (action, o) in enumerate(zip(chunk[:n], result.observations, strict=False)):
            info = step_info(result.info) if i == n - 1 else {}
            steps.append(EpisodeStep(np.asarray(action), o, success=result.success and i == n - 1, info=info))
        obs = result.last
        if solved_at is None and result.success:
            solved_at = len(steps)
        if max_steps is not None and len(steps) >= max_steps:
            break
        if solved_at is not None and after_success:
            if len(steps) - solved_at >= after_success:
                break
        elif result.done:
            break
    return Episode(
        initial_observation=first,
        steps=steps,
        policy_id=policy_id,
        world_id=world_id or world.world_id,
        seed=seed,
        scene_hash=scene_hash,
    )


def rollout_batch(
    world: BatchedWorld,
    policies: list[Policy],
    seeds: list[int],
    *,
    policy_ids: list[str],
    privileged: list[bool],
    scene_hash: str = "",
) -> list[Episode]:
    """Episodes i = (policies[i], seeds[i]) advanced together: every live episode's policy acts on
    its latest observation, then the world steps all of them in one call. An episode's result does
    not depend on which others share the batch (worlds draw noise per episode)."""
    n = len(policies)
    if not n == len(seeds) == len(policy_ids) == len(privileged):
        raise ValueError("policies, seeds, policy_ids and privileged must have one entry per episode")
    for p, s in zip(policies, seeds, strict=True):
        p.reset(s)
    obs = world.reset_batch(list(seeds))
    first = list(obs)
    steps: list[list[EpisodeStep]] = [[] for _ in range(n)]
    live = [True] * n
    while any(live):
        chunks: list[np.ndarray | None] = [None] * n
        for i in range(n):
            if live[i]:
                o = obs[i] if privileged[i] else obs[i].without_privileged()
                try:
                    chunks[i] = as_action_chunk(policies[i].act(o), world.action_dim)
                except ActionError as e:
                    raise ActionError(
                        f"policy {policy_ids[i]!r} at step {len(steps[i])} (seed {seeds[i]}): {e}"
                    ) from None
        results = world.step_batch(chunks)
        for i, r in enumerate(results):
            if not live[i] or r is None:
                continue
            m = len(r.observations)
            chunk = chunks[i]
            assert chunk is not None  # the episode was live, so its policy acted
            for k, (action, o) in enumerate(zip(chunk[:m], r.observations, strict=False)):
                info = step_info(r.info)
                steps[i].append(
                    EpisodeStep(np.asarray(action), o, success=r.success and k == m - 1, info=info)
                )
            obs[i] = r.last
            live[i] = not r.done
    return [
        Episode(
            initial_observation=first[i],
            steps=steps[i],
            policy_id=policy_ids[i],
            world_id=world.world_id,
            seed=seeds[i],
            scene_hash=scene_hash,
        )
        for i in range(n)
    ]
