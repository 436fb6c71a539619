"""A dynamics ensemble as a batched `World` over states, with frames from a renderer of states.

    world = EnsembleWorld(DynamicsEnsemble.from_pretrained(path), spec, renderer=twin.show)
    observations = world.reset_batch(initial_observations, seeds)     # e.g. the twin's, per seed
    results = world.step_batch(chunks)                                # one forward pass for all

Each episode advances COPlanner's way: per control step one elite member, drawn at random from the
episode's own generator (seeded by its seed, so an episode does not depend on its batch), samples
the next state from its Gaussian (`sample=True`) or gives its mean; `deterministic=True` uses the
elites' mean instead. Success is the scene's predicate on the predicted object poses, with its
margin (`scenes.predicates`). `info["uncertainty"]` is COPlanner's u (the elites' disagreement),
per step in `info["uncertainty_per_step"]`.

Observations carry the predicted proprio and object poses; images come from `renderer(state,
environment_state) -> Observation` (the twin's `show`: its renderer posed at the predicted state, no
physics), or are empty without one — enough for policies that read states, in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.errors import UsageError
from common.types import Observation, StepResult, as_action_chunk
from scenes.spec import SceneSpec
from worldmodels.ensemble import DynamicsEnsemble, canonical_quaternions

Renderer = Callable[[np.ndarray, np.ndarray], Observation]


@dataclass
class _Episode:
    state: torch.Tensor  # [S]
    initial: dict[str, tuple[np.ndarray, np.ndarray]]
    gen: torch.Generator
    step: int = 0
    done: bool = False
    uncertainty: list[float] = field(default_factory=list)


class EnsembleWorld:
    """The `World` and `BatchedWorld` protocols over a `DynamicsEnsemble` in a scene."""

    def __init__(
        self,
        model: DynamicsEnsemble,
        spec: SceneSpec,
        *,
        renderer: Renderer | None = None,
        physics: dict[str, float] | None = None,
        sample: bool = True,
        deterministic: bool = False,
    ) -> None:
        """`physics`: the scene's physics scale factors by name, which a model conditioned on physics
        needs (`scenes.randomization.physics_scales`; 1.0 = nominal)."""
        self.model, self.spec, self.renderer = model.eval(), spec, renderer
        self.cfg = model.cfg
        self.sample, self.deterministic = sample, deterministic
        self.action_dim = self.cfg.action_dim
        self.world_id = "ensemble"
        self.set_physics(physics or {})
        self.episodes: list[_Episode] = []
        from scenes.predicates import PREDICATES

        s = spec.task.success
        self._predicate = (PREDICATES.get(s.name), s.typed_params()) if s is not None else None

    def set_physics(self, physics: dict[str, float]) -> None:
        """The physics scale factors (by name; 1.0 = nominal) of the episodes reset from now on."""
        missing = [n for n in self.cfg.physics if n not in physics]
        if missing:
            raise UsageError(f"the ensemble is conditioned on physics {self.cfg.physics}; missing {missing}")
        bad = {n: physics[n] for n in self.cfg.physics if not physics[n] > 0}
        if bad:
            raise UsageError(f"physics scale factors must be positive, got {bad}")
        self._physics = torch.tensor([np.log(physics[n]) for n in self.cfg.physics], dtype=torch.float32)

    # ------------------------------------------------------------------ state <-> observation
    def _poses(self, env: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            o.name: (env[7 * i : 7 * i + 3].astype(np.float64), env[7 * i + 3 : 7 * i + 7].astype(np.float64))
            for i, o in enumerate(self.spec.objects)
        }

    def judge(self, env: np.ndarray, initial: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[bool, float]:
        """(success, margin) of the scene's predicate on object poses env [E]."""
        if self._predicate is None:
            return False, float("-inf")
        entry, params = self._predicate
        poses = self._poses(env)
        return bool(entry.fn(params, poses, initial)), float(entry.margin(params, poses, initial))

    def _observe(self, state: np.ndarray, env: np.ndarray, t: int) -> Observation:
        if self.renderer is not None:
            obs = self.renderer(state, env)
        else:
            obs = Observation(images={}, state=state, task=self.spec.task.instruction, environment_state=env)
        obs.timestamp = t / self.spec.control.rate_hz
        return obs

    # ------------------------------------------------------------------ batched API
    def reset_batch(self, observations: list[Observation], seeds: list[int]) -> list[Observation]:
        """Start one episode per (observed initial state, seed); observations need `environment_state`."""
        if len(observations) != len(seeds):
            raise UsageError(f"{len(observations)} observations but {len(seeds)} seeds")
        d, e = self.cfg.state_dim, self.cfg.env_dim
        self.episodes, out = [], []
        for obs, seed in zip(observations, seeds, strict=True):
            env = obs.environment_state
            if env is None or obs.state.shape != (d,) or env.shape != (e,):
                raise UsageError(
                    f"an ensemble world starts from state [{d}] and environment_state [{e}]; got "
                    f"{list(obs.state.shape)} and {None if env is None else list(env.shape)}"
                )
            env = canonical_quaternions(env)
            s = torch.from_numpy(np.concatenate([obs.state, env]).astype(np.float32))
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 7]).generate_state(1)[0]))
            self.episodes.append(_Episode(state=s, initial=self._poses(env), gen=gen))
            out.append(self._observe(obs.state, env, 0))
        return out

    def step_batch(self, chunks: list[np.ndarray | None]) -> list[StepResult | None]:
        """Execute one chunk per episode (None, or anything, for an ended episode: its result is None)."""
        if len(chunks) != len(self.episodes):
            raise UsageError(f"{len(chunks)} action chunks for {len(self.episodes)} episodes")
        live = [i for i, ep in enumerate(self.episodes) if not ep.done]
        acts = {i: as_action_chunk(chunks[i], self.action_dim) for i in live}
        record: dict[int, list[tuple[np.ndarray, float, bool, float]]] = {i: [] for i in live}
        k = 0
        while todo := [i for i in live if k < len(acts[i]) and not self.episodes[i].done]:
            states = torch.stack([self.episodes[i].state for i in todo])
            a = torch.from_numpy(np.stack([acts[i][k] for i in todo]))
            phys = self._physics.expand(len(todo), -1)
            gens = None if self.deterministic else [self.episodes[i].gen for i in todo]
            # each episode draws from its own generator: its rollout does not depend on the batch
            nxt = self.model.step(states, a, phys, gens, sample=self.sample)
            rows, u = nxt.next, nxt.uncertainty
            for j, i in enumerate(todo):
                ep = self.episodes[i]
                ep.state = rows[j]
                ep.step += 1
                ep.uncertainty.append(float(u[j]))
                env = ep.state[self.cfg.state_dim :].numpy()
                success, margin = self.judge(env, ep.initial)
                ep.done = success or ep.step >= self.spec.task.max_steps
                record[i].append((ep.state.numpy().copy(), float(u[j]), success, margin))
            k += 1
        results: list[StepResult | None] = [None] * len(self.episodes)
        d = self.cfg.state_dim
        for i in live:
            ep, rec = self.episodes[i], record[i]
            t0 = ep.step - len(rec)
            obs = [self._observe(s[:d], s[d:], t0 + n + 1) for n, (s, *_) in enumerate(rec)]
            success, margin = rec[-1][2], rec[-1][3]
            results[i] = StepResult(
                observations=obs,
                done=ep.done,
                info={
                    "success": success,
                    "margin": margin,
                    "uncertainty": float(np.mean([r[1] for r in rec])),
                    "uncertainty_per_step": [r[1] for r in rec],
                    "object_poses": {
                        n: {"pos": p.tolist(), "quat": q.tolist()}
                        for n, (p, q) in self._poses(rec[-1][0][d:]).items()
                    },
                    "step": ep.step,
                    "truncated": ep.done and not success,
                },
            )
        return results

    # ------------------------------------------------------------------ World protocol
    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        """options["observation"]: the observed initial state (an `Observation` with environment_state)."""
        obs = (options or {}).get("observation")
        if not isinstance(obs, Observation):
            raise UsageError("EnsembleWorld.reset needs options={'observation': Observation}")
        return self.reset_batch([obs], [seed])[0]

    def step(self, action_chunk: np.ndarray) -> StepResult:
        if not self.episodes:
            raise UsageError("EnsembleWorld.step before reset")
        r = self.step_batch([action_chunk])[0]
        if r is None:
            raise UsageError("EnsembleWorld.step after the episode ended; call reset")
        return r
