"""A trained video world model as a `World`: reset from observed context, step with action chunks.

    world = VideoWorld.from_pretrained("assets/worldmodels/push_cube_tiny")
    obs = world.reset(seed=0, options={"context": Context.from_observations([twin_obs])})
    result = world.step(policy.act(obs))        # observations decoded from imagined latents
    result.info["success"], result.info["success_prob"], result.info["uncertainty"]

    # many episodes in one forward pass
    obs = world.reset_batch(contexts, seeds)
    results = world.step_batch(chunks)

    # another sampler than the model's own
    world = VideoWorld(model, model.cfg.sampler.updated(samples=4, steps=16))

Each step generates `future` frames per pass, autoregressively, conditioned on the memory context
(recent steps + older steps of nearest pose). `sampler.samples` samples are drawn per episode; the
first sample's frames (or, with `sampler.frames: mean`, the samples' mean latent) and the samples'
mean state continue the episode, and their disagreement is the per-step uncertainty. The first
sample's initial noise is scaled by `sampler.temperature` (0: the flow ODE from the centre of the
noise distribution, the sharpest single estimate; the other samples stay at 1). Every episode
draws its noise from its own generator (seed, pass), so an episode's rollout does not depend on
which other episodes share the batch.

Success in imagination is the scene's own predicate on the predicted object poses (`success`);
the predicted value is reported beside it (`success_prob`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from common.errors import DreamTwinError, UsageError
from common.machine import native_bfloat16
from common.types import Observation, StepResult, as_action_chunk
from worldmodels.video_config import SamplerConfig
from worldmodels.video_model import VideoWorldModel, Window, context_indices

if TYPE_CHECKING:
    from scenes.spec import SceneSpec

Poses = dict[str, tuple[np.ndarray, np.ndarray]]  # object name -> (position [3], quaternion [4])


class SlowPrecisionWarning(UserWarning):
    """The sampler's number format is emulated on this machine, so imagining runs slower, not faster."""


class ContextError(DreamTwinError):
    """Context observations that do not fit the model (cameras, image size, state size)."""


@dataclass
class Context:
    """What the world starts from: T observed steps (oldest first).

    frames: camera -> uint8 [T, H, W, 3]; state [T, D]; env_state [T, E] (object poses, needed for the
    predicate and the state frames); actions [T - 1, A]: the action between step t and t + 1;
    physics: the scene's physics scale factors by name (`scenes.randomization.physics_scales`), which a
    model conditioned on physics (`cfg.physics`) needs.
    """

    frames: dict[str, np.ndarray]
    state: np.ndarray
    env_state: np.ndarray
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    physics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_observations(
        cls,
        observations: list[Observation],
        actions: np.ndarray | None = None,
        physics: dict[str, float] | None = None,
    ) -> Context:
        if not observations:
            raise ContextError("context needs at least one observation")
        env = [o.environment_state for o in observations if o.environment_state is not None]
        if len(env) < len(observations):
            raise ContextError(
                "context observations need environment_state (object poses) for the state frames"
            )
        cams = list(observations[0].images)
        return cls(
            frames={c: np.stack([o.images[c] for o in observations]) for c in cams},
            state=np.stack([o.state for o in observations]).astype(np.float32),
            env_state=np.stack(env).astype(np.float32),
            actions=np.zeros((0, 0), np.float32) if actions is None else np.asarray(actions, np.float32),
            physics=dict(physics or {}),
        )

    @classmethod
    def from_episode(
        cls,
        episode: dict[str, np.ndarray],
        cameras: list[str],
        upto: int,
        randomization_names: list[str] | None = None,
    ) -> Context:
        """Steps 0..upto of an episode in `datagen.windows.episode_arrays` form (frames [T, V, 3, H, W]); with
        `randomization_names` (the dataset's) its physics come from its `randomization` columns."""
        f = episode["frames"][: upto + 1]
        physics: dict[str, float] = {}
        if randomization_names and "randomization" in episode:
            row = episode["randomization"][0]
            physics = {
                n: float(v) for n, v in zip(randomization_names, row, strict=True) if n.endswith("_scale")
            }
        return cls(
            frames={c: np.ascontiguousarray(f[:, v].transpose(0, 2, 3, 1)) for v, c in enumerate(cameras)},
            state=episode["state"][: upto + 1],
            env_state=episode["env_state"][: upto + 1],
            actions=episode["actions"][:upto],
            physics=physics,
        )


@dataclass
class _Episode:
    seed: int
    latents: torch.Tensor  # [T, V, c, h, w] normalised
    vectors: torch.Tensor  # [T, D] state, env, value
    actions: torch.Tensor  # [T, A] action that led into step t (row 0 unused)
    initial: Poses
    step: int
    physics: torch.Tensor | None  # [P] log scale factors (`cfg.physics`), None when the model has none
    passes: int = 0
    done: bool = False


class _Imagined(NamedTuple):
    """One imagined step of an episode."""

    latent: torch.Tensor  # [V, c, h, w]: the frame that continues the episode
    vector: torch.Tensor  # [D]: the samples' mean state
    uncertainty: torch.Tensor  # []: the samples' disagreement
    values: torch.Tensor  # [S]: each sample's predicted value


class VideoWorld:
    """The `World` protocol over a `VideoWorldModel`, with a batched API beside it."""

    def __init__(
        self,
        model: VideoWorldModel,
        sampler: SamplerConfig | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        """`sampler`: how to generate (default: the model's own `sampler` section)."""
        self.model = model.to(device).eval()
        self.cfg = model.cfg
        self.sampler = sampler or self.cfg.sampler
        self.device = torch.device(device)
        if self.sampler.precision == "bfloat16" and self.device.type == "cpu" and not native_bfloat16():
            warnings.warn(
                "sampler precision bfloat16 on a CPU without native bfloat16 (no avx512_bf16, amx_bf16 or bf16 "
                "in its features): the network passes are emulated and run several times slower than float32 "
                "(6.7x slower on an AVX2-only AMD EPYC, docs/results.md); use float32 on this machine",
                SlowPrecisionWarning,
                stacklevel=2,
            )
        self.action_dim = self.cfg.action_dim
        self.world_id = "worldmodel"
        self.cameras = self.cfg.cameras or ["camera"]
        self._spec: SceneSpec | None = None
        if self.cfg.scene is not None:
            from scenes.spec import SceneSpec

            self._spec = SceneSpec.model_validate(self.cfg.scene)
        self.max_steps = self._spec.task.max_steps if self._spec is not None else self.cfg.max_steps - 1
        self.task = self._spec.task.instruction if self._spec is not None else ""
        self.episodes: list[_Episode] = []
        self.stop_on_success = True  # end an episode when the predicate holds (as the twin does)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, sampler: SamplerConfig | None = None, *, device: str | torch.device = "cpu"
    ) -> VideoWorld:
        world = cls(VideoWorldModel.from_pretrained(path), sampler, device=device)
        world.world_id = f"worldmodel:{path}"
        return world

    # ------------------------------------------------------------------ context
    def _check(self, ctx: Context) -> None:
        H, W = self.cfg.image_size
        missing = [c for c in self.cameras if c not in ctx.frames]
        if missing:
            raise ContextError(f"context lacks cameras {missing}; the model was trained on {self.cameras}")
        T = len(ctx.state)
        for c in self.cameras:
            f = ctx.frames[c]
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise ContextError(
                    f"context frames[{c!r}] must be uint8 [T, H, W, 3], got {f.dtype} {list(f.shape)}"
                )
            if f.shape[1:3] != (H, W):
                raise ContextError(
                    f"context frames[{c!r}] are {f.shape[1]}x{f.shape[2]}; the model was trained on {H}x{W} images"
                )
            if len(f) != T:
                raise ContextError(f"context frames[{c!r}] has {len(f)} steps, state has {T}")
        if ctx.state.shape[1:] != (self.cfg.state_dim,) or ctx.env_state.shape != (T, self.cfg.env_dim):
            raise ContextError(
                f"context state must be [T, {self.cfg.state_dim}] and env_state [T, {self.cfg.env_dim}], "
                f"got {list(ctx.state.shape)} and {list(ctx.env_state.shape)}"
            )
        missing_physics = [n for n in self.cfg.physics if n not in ctx.physics]
        if missing_physics:
            raise ContextError(
                f"the model is conditioned on physics {self.cfg.physics}; the context lacks {missing_physics} "
                "(Context.physics: scale factors by name, 1.0 = the scene's nominal physics)"
            )
        bad = {n: ctx.physics[n] for n in self.cfg.physics if not ctx.physics[n] > 0}
        if bad:
            raise ContextError(f"context physics scale factors must be positive, got {bad}")
        if T > 1 and ctx.actions.shape != (T - 1, self.action_dim):
            raise ContextError(
                f"context actions must be [T - 1, {self.action_dim}] = [{T - 1}, {self.action_dim}], got {list(ctx.actions.shape)}"
            )

    def _poses(self, env: np.ndarray) -> Poses:
        if self._spec is None:
            return {}
        return {
            o.name: (env[7 * i : 7 * i + 3].astype(np.float64), env[7 * i + 3 : 7 * i + 7].astype(np.float64))
            for i, o in enumerate(self._spec.objects)
        }

    def judge(self, env_state: np.ndarray, initial: Poses) -> bool:
        """The scene's success predicate on (predicted) object poses env_state [E]."""
        if self._spec is None or self._spec.task.success is None:
            return False
        from scenes.predicates import PREDICATES

        s = self._spec.task.success
        return bool(PREDICATES.get(s.name).fn(s.typed_params(), self._poses(env_state), initial))

    def _env_state(self, vector: torch.Tensor) -> np.ndarray:
        """The object poses [E] of a state-frame vector [D]."""
        d = self.cfg.state_dim
        return vector.cpu().numpy()[d : d + self.cfg.env_dim]

    def _observation(self, ep: _Episode, t: int, frames: np.ndarray) -> Observation:
        v = ep.vectors[t].cpu().numpy()
        d, e = self.cfg.state_dim, self.cfg.env_dim
        return Observation(
            images={c: frames[i] for i, c in enumerate(self.cameras)},
            state=v[:d],
            environment_state=v[d : d + e],
            task=self.task,
            timestamp=t / self.cfg.fps,
        )

    # ------------------------------------------------------------------ batched API
    def reset_batch(self, contexts: list[Context], seeds: list[int]) -> list[Observation]:
        """Start len(contexts) episodes, each at its context's last step."""
        if len(contexts) != len(seeds):
            raise ContextError(f"{len(contexts)} contexts but {len(seeds)} seeds")
        self.episodes = []
        out = []
        for ctx, seed in zip(contexts, seeds, strict=True):
            self._check(ctx)
            frames = np.stack([ctx.frames[c] for c in self.cameras], axis=1)  # [T, V, H, W, 3]
            x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3))).to(self.device)
            T = len(ctx.state)
            vec = np.concatenate([ctx.state, ctx.env_state, np.zeros((T, 1), np.float32)], 1)
            acts = np.zeros((T, self.action_dim), np.float32)
            if T > 1:
                acts[1:] = ctx.actions
            ep = _Episode(
                seed=seed,
                latents=self.model.encode_frames(x),
                vectors=torch.from_numpy(vec).to(self.device),
                actions=torch.from_numpy(acts).to(self.device),
                initial=self._poses(ctx.env_state[0]),
                step=T - 1,
                physics=(
                    torch.tensor([np.log(ctx.physics[n]) for n in self.cfg.physics], dtype=torch.float32).to(
                        self.device
                    )
                    if self.cfg.physics
                    else None
                ),
            )
            self.episodes.append(ep)
            out.append(self._observation(ep, T - 1, frames[-1]))
        return out

    def _window(self, eps: list[_Episode], chunks: list[torch.Tensor]) -> Window:
        m, F = self.cfg.memory, len(chunks[0])
        ci, cv, ac, ha, po, of = [], [], [], [], [], []
        for ep, a in zip(eps, chunks, strict=True):
            T = len(ep.latents)
            idx = context_indices(
                ep.vectors[:, : self.cfg.state_dim].cpu(), m.recent, m.retrieved, m.pose_dims
            ).to(self.device)
            ci.append(ep.latents[idx])
            cv.append(ep.vectors[idx])
            po.append(ep.vectors[idx, : self.cfg.state_dim])
            ac.append(torch.cat([ep.actions[idx], a]))
            ha.append(torch.cat([idx > 0, torch.ones(F, dtype=torch.bool, device=self.device)]))
            of.append(torch.cat([idx - (T - 1), torch.arange(1, F + 1, device=self.device)]))
        st = torch.stack
        physics = st([ep.physics for ep in eps]) if self.cfg.physics else None  # type: ignore[misc]
        return Window(st(ci), st(cv), st(ac), st(ha), st(po), st(of), physics=physics)

    def _autocast(self) -> torch.autocast:
        """The sampler's number format for the network passes (`SamplerConfig.precision`)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.sampler.precision == "bfloat16"
        )

    def _pass_noise(
        self, ep: _Episode, n_frames: int, ctx_shape: tuple[int, ...], img_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The noise of an episode's next pass, from its own generator (seed, pass): image [S, F, V, c, h, w]
        and state [S, F, cs, hs, ws] noise (the first sample's scaled by the temperature), and the context
        latents' noise [S, K, V, c, h, w] when the sampler noises the context (else None)."""
        S = self.sampler.samples
        g = torch.Generator().manual_seed(
            int(np.random.SeedSequence([ep.seed, ep.passes]).generate_state(1)[0])
        )
        ep.passes += 1
        # drawn first, so that a shorter pass still sees a prefix of the frame noise
        ctx = torch.randn(S, *ctx_shape, generator=g) if self.sampler.context_noise > 0 else None
        per_frame = [
            (torch.randn(S, *img_shape, generator=g), torch.randn(S, *self.model.state_shape, generator=g))
            for _ in range(n_frames)
        ]
        scale = torch.ones(S)
        scale[0] = self.sampler.temperature  # the first sample's temperature; the others stay at 1
        img, state = (torch.stack([f[k] for f in per_frame], 1) for k in (0, 1))  # [S, F, ...]
        return img * scale.view(S, *[1] * (img.ndim - 1)), state * scale.view(S, *[1] * (state.ndim - 1)), ctx

    def _generate(
        self, eps: list[_Episode], chunks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass for each episode: F <= cfg.future steps from its chunk [F, A] (all chunks of one length).
        Returns latents [B, S, F, V, c, h, w], vectors [B, S, F, D], uncertainty [B, F].

        The denoiser is frame-causal, so generating fewer than `cfg.future` frames gives exactly the
        frames a full pass would (under the same noise) at a fraction of the cost; noise is drawn
        frame by frame so that a shorter pass sees a prefix of a longer pass's noise."""
        S, F, B = self.sampler.samples, len(chunks[0]), len(eps)
        win = self._window(eps, chunks)
        noise = [
            self._pass_noise(ep, F, tuple(win.ctx_img.shape[1:]), tuple(win.ctx_img.shape[2:])) for ep in eps
        ]
        ctx_eps = [n[2] for n in noise if n[2] is not None]
        with self._autocast():
            lat, vec = self.model.sample(
                win.map(lambda x: x.repeat_interleave(S, 0)),
                torch.cat([n[0] for n in noise]).to(self.device),
                torch.cat([n[1] for n in noise]).to(self.device),
                self.sampler,
                torch.cat(ctx_eps).to(self.device) if ctx_eps else None,
            )
        lat, vec = lat.float(), vec.float()
        lat = lat.reshape(B, S, *lat.shape[1:])
        vec = vec.reshape(B, S, *vec.shape[1:])
        unc = (
            lat.std(1, unbiased=False).mean(dim=tuple(range(2, lat.ndim - 1)))
            if S > 1
            else lat.new_zeros(B, F)
        )
        return lat, vec, unc

    def step_batch(self, chunks: list[np.ndarray]) -> list[StepResult | None]:
        """Execute one chunk per episode (None for episodes already done); chunks may differ in length."""
        if len(chunks) != len(self.episodes):
            raise ContextError(f"{len(chunks)} action chunks for {len(self.episodes)} episodes")
        live = [i for i, ep in enumerate(self.episodes) if not ep.done]
        acts = {
            i: torch.from_numpy(as_action_chunk(chunks[i], self.action_dim)).to(self.device) for i in live
        }
        imagined = self._imagine(acts)
        # every episode's new frames decoded in one VAE call (a batch of 1 per episode costs ~2x as much)
        results: list[StepResult | None] = [None] * len(self.episodes)
        latents = [s.latent for i in live for s in imagined[i]]
        if not latents:  # every episode had already ended
            return results
        with self._autocast():
            pixels = self.model.decode_latents(torch.stack(latents))
        decoded = pixels.cpu().numpy().transpose(0, 1, 3, 4, 2)
        start = 0
        for i in live:
            n = len(imagined[i])
            results[i] = self._result(self.episodes[i], imagined[i], decoded[start : start + n])
            start += n
        return results

    def _imagine(self, acts: dict[int, torch.Tensor]) -> dict[int, list[_Imagined]]:
        """Run episode i's actions acts[i] [K_i, A], all episodes pass by pass: each pass generates the
        frames the longest remaining chunk needs (at most `future`), and an episode stops early at
        success or at its last step."""
        out: dict[int, list[_Imagined]] = {i: [] for i in acts}
        pos = dict.fromkeys(acts, 0)
        stopped: set[int] = set()
        while todo := [i for i in acts if i not in stopped and pos[i] < len(acts[i])]:
            n_pass = min(self.cfg.future, max(len(acts[i]) - pos[i] for i in todo))
            pieces = []
            for i in todo:
                a = acts[i][pos[i] : pos[i] + n_pass]
                pieces.append(torch.cat([a, a[-1:].expand(n_pass - len(a), -1)]) if len(a) < n_pass else a)
            lat, vec, unc = self._generate([self.episodes[i] for i in todo], pieces)
            for j, i in enumerate(todo):
                n = min(n_pass, len(acts[i]) - pos[i])
                if self._extend(
                    self.episodes[i], acts[i][pos[i] : pos[i] + n], lat[j], vec[j], unc[j], out[i]
                ):
                    stopped.add(i)
                pos[i] += n
        return out

    def _extend(
        self,
        ep: _Episode,
        actions: torch.Tensor,
        lat: torch.Tensor,
        vec: torch.Tensor,
        unc: torch.Tensor,
        out: list[_Imagined],
    ) -> bool:
        """Append a pass's first len(actions) steps to the episode (lat [S, F, V, c, h, w], vec [S, F, D],
        unc [F]) and to `out`; True when the episode ended on one of them."""
        for k in range(len(actions)):
            v = vec[:, k].mean(0)  # the samples' mean state: a better point estimate than any one sample
            z = lat[:, k].mean(0) if self.sampler.frames == "mean" else lat[0, k]
            ep.latents = torch.cat([ep.latents, z[None]])
            ep.vectors = torch.cat([ep.vectors, v[None]])
            ep.actions = torch.cat([ep.actions, actions[k][None]])
            ep.step += 1
            out.append(_Imagined(z, v, unc[k], vec[:, k, self.cfg.value_index]))
            if (
                self.stop_on_success and self.judge(self._env_state(v), ep.initial)
            ) or ep.step >= self.max_steps:
                ep.done = True
                return True
        return False

    def _result(self, ep: _Episode, steps: list[_Imagined], frames: np.ndarray) -> StepResult:
        """The StepResult of an episode's latest `steps` with their decoded frames uint8 [n, V, H, W, 3]
        (success, value, uncertainty)."""
        T = len(ep.latents)
        obs = [self._observation(ep, T - len(steps) + k, frames[k]) for k in range(len(steps))]
        env = self._env_state(ep.vectors[-1])
        success = self.judge(env, ep.initial)
        return StepResult(
            observations=obs,
            done=ep.done,
            info={
                "success": success,
                "success_prob": float(steps[-1].values.mean().clamp(0, 1)),
                "value_per_step": [float(s.values.mean().clamp(0, 1)) for s in steps],
                "uncertainty": float(torch.stack([s.uncertainty for s in steps]).mean()),
                "uncertainty_per_step": [float(s.uncertainty) for s in steps],
                "predicted_state": obs[-1].state,
                "object_poses": self._poses(env),
                "step": ep.step,
                "truncated": ep.done and not success,
            },
        )

    # ------------------------------------------------------------------ World protocol
    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        """options["context"]: a `Context`, an `Observation` or a list of them (oldest first)."""
        ctx = (options or {}).get("context")
        if ctx is None:
            raise UsageError(
                "VideoWorld.reset needs options={'context': Context | [Observation, ...]}: "
                "a learned world starts from observed frames"
            )
        if isinstance(ctx, Observation):
            ctx = [ctx]
        if isinstance(ctx, list):
            ctx = Context.from_observations(ctx)
        return self.reset_batch([ctx], [seed])[0]

    def step(self, action_chunk: np.ndarray) -> StepResult:
        if not self.episodes:
            raise UsageError("VideoWorld.step before reset")
        if self.episodes[0].done:
            raise UsageError("VideoWorld.step after the episode ended; call reset")
        r = self.step_batch([action_chunk])[0]
        assert r is not None  # the episode was live
        return r
