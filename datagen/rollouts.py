"""Synthetic dataset generation: policy rollouts in randomised twins, written as a LeRobot dataset.

    dreamtwin datagen rollouts --scene configs/scenes/push_cube.yaml --policy expert:0.5,image_mild:0.5 \
        --episodes 200 --seed 0 --out data/push --randomize configs/randomization/push_cube.yaml --workers 2

Attempt i uses seed `seed + i`, the scene variant drawn from that seed, and a policy drawn from
the mix with that seed — so an attempt's content depends on (job, i) only, never on which worker
or backend ran it. With `only_success` (and/or `only_trusted`), the dataset holds the first N attempts kept.

Crash safety: every finished attempt is staged under `OUT/.dreamtwin/staging/ep-<i>/`, written to
a temporary directory and renamed into place (a killed worker leaves no partial episode). When
all needed attempts are staged, the LeRobot files are assembled in `OUT/.dreamtwin/assembly/` and
moved into `OUT/` with `meta/` last, so `meta/info.json` exists only for a complete dataset. A
rerun of the same command skips staged attempts and finishes the job; a different job aimed at
the same directory is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from common.config import Strict, load_model
from common.errors import DreamTwinError, SpecError, UsageError
from common.io import atomic_write_text, fsync_dir, fsync_tree, stable_hash
from common.pool import WorkerPool
from common.types import Episode
from common.video import VideoSettings, encode_video
from policy_eval.robots.twin import TwinRobotConfig

if TYPE_CHECKING:
    from scenes.twin import DigitalTwin

JOB_VERSION = 1


class DatagenError(DreamTwinError):
    """A generation job that cannot run as asked (its message names the file or option)."""


class SynthSettings(Strict):
    """`dreamtwin datagen synth`: episodes sampled by a trajectory diffusion model (`worldmodels.trajectory`)
    instead of rolled out, guided towards the job's one policy (PGD) or unguided (guidance 0)."""

    model: str = Field(description="trajectory diffusion checkpoint directory (`dreamtwin train trajectory`)")
    guidance: float = Field(0.0, ge=0, description="PGD's guidance coefficient; 0 = unguided")
    batch: int = Field(64, ge=1, description="windows sampled together (attempt i: window i % batch)")
    sampler_steps: int | None = Field(None, ge=1, description="Heun steps (default: the model's)")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from worldmodels.trajectory import is_trajectory_checkpoint

        if not is_trajectory_checkpoint(v):
            raise ValueError(
                f"{v}: not a trajectory diffusion checkpoint (config.json of type trajectory_diffusion)"
            )
        return v


class RolloutJob(Strict):
    """What to generate. Everything except `episodes`, `out`, `workers`, `backend` and
    `ray_address` decides the content and goes into the job's fingerprint."""

    scene: str = Field(description="SceneSpec YAML path")
    scene_overrides: dict[str, Any] = Field(
        {}, description="dotted-key overrides of the scene, e.g. cameras.0.resolution"
    )
    policies: dict[str, float] = Field(
        description="policy (registered name, checkpoint directory or UP-MPC YAML) -> mix weight"
    )
    episodes: int = Field(ge=1, description="episodes in the finished dataset")
    seed: int = Field(0, ge=0, description="attempt i uses seed + i")
    out: str = "data/rollouts"
    randomize: str | None = Field(None, description="randomisation YAML (configs/randomization/...)")
    world: str = Field(
        "twin",
        description="twin; ensemble:PATH for synthetic episodes imagined by a dynamics ensemble (frames from "
        "the twin posed at its states); worldmodel:PATH for episodes imagined by a video world model from the "
        "twin's first frame (frames, state read-out and success all imagined: `dreamtwin datagen imagine`). "
        "Learned worlds' datasets are tagged synthetic",
    )
    samples: int | None = Field(None, ge=1, description="worldmodel: samples per step (default: the model's)")
    sampler_steps: int | None = Field(
        None, ge=1, description="worldmodel: denoising steps (default: the model's)"
    )
    synth: SynthSettings | None = Field(
        None,
        description="sample the episodes with a trajectory diffusion model guided towards the one policy "
        "(frames from the twin posed at the sampled states); the dataset is tagged synthetic",
    )
    only_success: bool = False
    only_trusted: bool = Field(
        False,
        description="worldmodel: keep only the episodes the world model's trust.json trusts (with only_success: "
        "its trusted successes). Every episode a world model with a trust.json imagines records its trust",
    )
    after_success: int = Field(
        0,
        ge=0,
        description="twin: a successful episode goes on for this many more steps (within the task's max_steps), "
        "so a world model learns what follows a success (a lifted cube held up), not only its first frame",
    )
    max_attempts_factor: float = Field(
        20.0, gt=1, description="only_success: give up after factor * episodes attempts"
    )
    robot: TwinRobotConfig | None = Field(
        None,
        description="record through a robot (`dreamtwin record`): the twin behind the Robot interface, with its "
        "safety limits, latency and held-out variant; episodes keep interventions and stop reasons",
    )
    workers: int = Field(1, ge=1)
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(None, description="Ray cluster address; none starts a local Ray")
    video: VideoSettings = VideoSettings()

    @field_validator("world")
    @classmethod
    def _world(cls, v: str) -> str:
        from policy_eval.worlds import parse_world

        return str(parse_world(v))

    @model_validator(mode="after")
    def _synth(self) -> RolloutJob:
        if self.synth is not None and (
            self.world != "twin"
            or self.robot is not None
            or self.randomize is not None
            or len(self.policies) != 1
        ):
            raise ValueError(
                "synth takes exactly one policy (the guide) and neither another world, a robot nor randomize"
            )
        return self

    @model_validator(mode="after")
    def _only_trusted(self) -> RolloutJob:
        if self.only_trusted and not self.world.startswith("worldmodel:"):
            raise ValueError(
                "only_trusted keeps what a video world model's trust.json trusts: world worldmodel:PATH"
            )
        return self

    @property
    def selective(self) -> bool:
        """The dataset holds the first N attempts that `keeps` (not simply the first N)."""
        return self.only_success or self.only_trusted

    def keeps(self, meta: dict[str, Any]) -> bool:
        """Whether a staged attempt goes into the dataset."""
        return (not self.only_success or bool(meta["success"])) and (
            not self.only_trusted or bool(meta.get("trusted", False))
        )

    @model_validator(mode="after")
    def _after_success(self) -> RolloutJob:
        if self.after_success and (self.world != "twin" or self.robot is not None or self.synth is not None):
            raise ValueError(
                "after_success records the twin's own rollouts: not another world, a robot or synth"
            )
        return self

    @model_validator(mode="after")
    def _robot(self) -> RolloutJob:
        if self.robot is not None and (self.randomize is not None or self.world != "twin"):
            raise ValueError(
                "a robot recording takes neither randomize nor another world (the robot is the world)"
            )
        if (
            self.robot is not None
            and self.robot.outcome == "prompt"
            and (self.workers != 1 or self.backend != "local")
        ):
            raise ValueError(
                "outcomes asked at the prompt need one local worker (workers: 1, backend: local)"
            )
        return self

    @field_validator("policies")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        from policy_eval.policies import policy_info

        if not v:
            raise ValueError("at least one policy is needed")
        for p in v:
            policy_info(p)  # raises naming the unknown policy and the registered ones
        if any(w <= 0 for w in v.values()):
            raise ValueError(f"mix weights must be positive, got {v}")
        return v


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> RolloutJob:
    return load_model(RolloutJob, path, overrides)


def parse_policy_mix(text: str) -> dict[str, float]:
    """`expert:0.5,image_mild:0.5` (or `expert,image_mild`, equal weights) -> {name: weight}."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, w = part.partition(":")
        try:
            mix[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise SpecError(f"--policy: weight of {name!r} is not a number: {w!r}") from None
    return mix


# ---------------------------------------------------------------------- resolved job
@dataclass
class ResolvedJob:
    """The job with its scene and randomisation loaded; cheap to rebuild in every worker."""

    job: RolloutJob
    spec: Any
    rnd: Any

    @classmethod
    def load(cls, job: RolloutJob) -> ResolvedJob:
        from scenes.randomization import load_randomization
        from scenes.spec import load_scene_spec

        spec = load_scene_spec(job.scene, dict(job.scene_overrides) or None)
        if not spec.cameras:
            raise SpecError(f"{job.scene}: datasets need at least one camera; the scene has none")
        rnd = load_randomization(job.randomize) if job.randomize else None
        return cls(job, spec, rnd)

    def fingerprint(self) -> str:
        j = self.job
        return stable_hash(
            {
                "version": JOB_VERSION,
                "scene": self.spec.model_dump(mode="json"),
                "randomize": self.rnd.model_dump(mode="json") if self.rnd else None,
                "policies": j.policies,
                "seed": j.seed,
                "only_success": j.only_success,
                **({"only_trusted": True, "trust_hash": self._trust_hash()} if j.only_trusted else {}),
                "video": j.video.model_dump(),
                **({"world": j.world, "world_hash": _world_hash(j.world)} if j.world != "twin" else {}),
                **({"sampler": [j.samples, j.sampler_steps]} if j.samples or j.sampler_steps else {}),
                **({"robot": j.robot.model_dump(mode="json")} if j.robot is not None else {}),
                **(
                    {"synth": {**j.synth.model_dump(), "model_hash": _model_hash(j.synth.model)}}
                    if j.synth
                    else {}
                ),
            }
        )

    def attempt(self, i: int) -> tuple[int, str]:
        """(seed, policy name) of attempt i."""
        names = sorted(self.job.policies)
        w = np.array([self.job.policies[n] for n in names], dtype=np.float64)
        rng = np.random.default_rng([self.job.seed, i, 0x9011C7])
        return self.job.seed + i, names[int(rng.choice(len(names), p=w / w.sum()))]

    def max_attempts(self) -> int:
        return (
            int(np.ceil(self.job.episodes * self.job.max_attempts_factor))
            if self.job.selective
            else self.job.episodes
        )

    def trust_file(self) -> Path | None:
        """The trust.json of the job's video world model, if it has one (only_trusted: it must)."""
        from policy_eval.trust import TRUST_FILE, world_trust_file

        path = world_trust_file(self.job.world)
        if path is None and self.job.only_trusted:
            missing = Path(self.job.world.partition(":")[2]) / TRUST_FILE
            raise DatagenError(f"only_trusted: {missing} does not exist (experiments/trust.py writes one)")
        return path

    def _trust_hash(self) -> str:
        from common.io import files_sha256

        path = self.trust_file()
        assert path is not None  # only_trusted: trust_file raises when there is none
        return files_sha256([path])


def _model_hash(path: str) -> str:
    from common.io import files_sha256

    return files_sha256([Path(path) / "config.json", Path(path) / "model.safetensors"])


def _world_hash(world: str) -> str | None:
    from policy_eval.worlds import parse_world, world_fingerprint

    return world_fingerprint(parse_world(world))


# ---------------------------------------------------------------------- one attempt
class EpisodeMaker:
    """Builds one twin and turns attempt indices into staged episodes."""

    def __init__(self, resolved: ResolvedJob, staging: Path, twin: Any = None) -> None:
        from scenes.randomization import variable_fields
        from scenes.twin import DigitalTwin

        self.r = resolved
        self.staging = staging
        if twin is not None and variable_fields(twin.built_spec) != variable_fields(resolved.spec):
            raise DatagenError(f"the twin given was built from another scene than {resolved.job.scene}")
        self.twin = twin if twin is not None else DigitalTwin(resolved.spec, render=True)
        self.spec_hash = resolved.spec.hash()
        self.world: Any = self.twin
        if resolved.job.world != "twin":  # synthetic: an ensemble imagines, the twin starts and draws
            from policy_eval.worlds import make_world

            self.world = make_world(
                resolved.job.world,
                resolved.spec,
                twin=self.twin,
                samples=resolved.job.samples,
                sampler_steps=resolved.job.sampler_steps,
            )
        if resolved.job.robot is not None:  # recording: the twin is the stand-in robot behind safety limits
            self.world = resolved.job.robot.world(self.twin, resolved.spec)
        self.synth = _window_source(resolved, self.twin) if resolved.job.synth is not None else None
        self.trust: Any = None
        trust = resolved.trust_file()
        if trust is not None:  # the trust scores the state read-out against the objects the model knows
            from policy_eval.trust import TrustChecker

            self.trust = TrustChecker.load(trust, resolved.spec)

    @classmethod
    def from_json(cls, job_json: str, staging: str) -> EpisodeMaker:
        """The factory a worker process or Ray actor calls (plain-data arguments)."""
        return cls(ResolvedJob.load(RolloutJob.model_validate_json(job_json)), Path(staging))

    def make(self, i: int) -> dict[str, Any]:
        from policy_eval.policies import make_policy, policy_info
        from policy_eval.runner import rollout
        from scenes.randomization import sample_variation

        final = self.staging / f"ep-{i:06d}"
        if (final / "meta.json").exists():
            return json.loads((final / "meta.json").read_text())
        seed, name = self.r.attempt(i)
        variation = sample_variation(self.r.spec, self.r.rnd, seed)
        self.twin.set_variant(variation.spec)
        if self.world is not self.twin and self.r.job.robot is None:  # the imagined world is told the physics
            self.world.dress(variation.spec)
        policy = make_policy(name, variation.spec, seed=self.r.job.seed)
        t0 = time.perf_counter()
        if self.synth is not None:
            ep = self.synth.episode(i, policy_id=name, world_id="synth", scene_hash=self.spec_hash)
        else:
            ep = rollout(
                self.world,
                policy,
                seed,
                policy_id=name,
                privileged=policy_info(name).privileged,
                scene_hash=self.spec_hash,
                max_steps=self.r.spec.task.max_steps if self.r.job.after_success else None,
                after_success=self.r.job.after_success,
            )
        extra: dict[str, Any] = {}
        if self.r.job.robot is not None:
            from policy_eval.evaluate import robot_summary

            extra = robot_summary(ep)
        if self.trust is not None:
            (score,) = self.trust.score([ep])
            extra = {"trust": score["trust"], "trusted": score["trusted"]}
        meta = stage_episode(self.staging, i, ep, variation.params, self.r, name, seed, extra)
        meta["seconds"] = time.perf_counter() - t0
        return meta


def _window_source(resolved: ResolvedJob, twin: Any) -> Any:
    """The job's trajectory sampler, guided by its one policy when guidance > 0."""
    from policy_eval.policies import make_policy
    from worldmodels.trajectory import TrajectoryDiffusion, WindowSource

    job = resolved.job
    assert job.synth is not None
    st = job.synth
    model = TrajectoryDiffusion.from_pretrained(st.model)
    guide: Any = None
    if st.guidance > 0:
        (name,) = job.policies
        guide = make_policy(name, resolved.spec, seed=job.seed)
        if not callable(getattr(guide, "log_prob", None)):
            raise DatagenError(
                f"guidance needs a policy with an action log-likelihood (log_prob), e.g. a td3bc checkpoint; "
                f"{name} has none (use guidance 0 for unguided samples)"
            )

    def render(state: np.ndarray, environment_state: np.ndarray) -> Any:
        """The twin posed at a sampled state, the arm by the joints that put the hand at the sampled end
        effector (`DigitalTwin.posed_by_ee`), so that a synthetic episode's state agrees with itself and
        with its frames (a sixth less dynamics error than posing by the sampled joints:
        benchmarks/pgd_synthesis.py)."""
        obs = twin.show(twin.posed_by_ee(state), environment_state)
        obs.state = twin.proprio()
        return obs

    return WindowSource(
        model,
        render,
        seed=job.seed,
        batch=st.batch,
        policy=guide,
        coeff=st.guidance,
        steps=st.sampler_steps,
        task=resolved.spec.task.instruction,
    )


def episode_arrays(ep: Episode) -> dict[str, np.ndarray]:
    """Frame-aligned arrays of an Episode (T actions -> T + 1 frames).

    Frame t < T holds observation t, the action taken from it and `next.success` after it; the
    last frame holds the final observation with a hold action (zero motion, same gripper) and is
    the only frame with `next.done`.
    """
    obs = [ep.initial_observation] + [s.observation for s in ep.steps]
    poses = [o.environment_state for o in obs]
    if any(p is None for p in poses):
        raise UsageError(
            f"episode {ep.policy_id}/{ep.seed}: datasets need every observation's environment_state"
        )
    actions = np.stack([np.asarray(s.action, np.float32) for s in ep.steps])
    hold = np.zeros_like(actions[-1])
    hold[3:] = actions[-1][3:]
    T = len(obs)
    success = np.array([s.success for s in ep.steps] + [bool(ep.success)], dtype=bool)
    done = np.zeros(T, dtype=bool)
    done[-1] = True
    return {
        "observation.state": np.stack([o.state for o in obs]).astype(np.float32),
        "observation.environment_state": np.stack([p for p in poses if p is not None]).astype(np.float32),
        "action": np.concatenate([actions, hold[None]]).astype(np.float32),
        "timestamp": np.array([o.timestamp for o in obs], dtype=np.float32),
        "next.success": success,
        "next.done": done,
    }


def stage_episode(
    staging: Path,
    i: int,
    ep: Episode,
    params: dict[str, float],
    r: ResolvedJob,
    policy: str,
    seed: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write attempt i's arrays, videos and metadata (+ `extra`, e.g. a robot's interventions); appears
    atomically as `staging/ep-<i>`."""
    from datagen.lerobot import episode_stats

    final = staging / f"ep-{i:06d}"
    tmp = staging / f".tmp-ep-{i:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = episode_arrays(ep)
    arrays["randomization"] = np.tile(np.array(list(params.values()), np.float32), (len(arrays["action"]), 1))
    fps = r.spec.control.rate_hz
    frames = {
        c.name: np.stack(
            [ep.initial_observation.images[c.name]] + [s.observation.images[c.name] for s in ep.steps]
        )
        for c in r.spec.cameras
    }
    for cam, fr in frames.items():
        encode_video(fr, tmp / f"{cam}.mp4", fps, r.job.video)
    np.savez(tmp / "arrays.npz", **arrays)  # type: ignore[arg-type]  # numpy types **kwds as allow_pickle
    meta = {
        "attempt": i,
        "seed": seed,
        "policy": policy,
        "success": bool(ep.success),
        "length": len(arrays["action"]),
        "task": r.spec.task.instruction,
        "scene_hash": r.spec.hash(),
        "randomization_names": list(params),
        "stats": episode_stats(arrays, frames),
        **(extra or {}),
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    fsync_tree(tmp)
    try:
        os.rename(tmp, final)
    except OSError:  # already staged by an earlier run that was cut off after its rename
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(staging)
    return meta


# ---------------------------------------------------------------------- the job
def staged(staging: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for d in staging.glob("ep-*"):
        m = d / "meta.json"
        if m.exists():
            out[int(d.name[3:])] = json.loads(m.read_text())
    return out


def select(job: RolloutJob, done: dict[int, dict[str, Any]]) -> list[int] | None:
    """The attempts that make the dataset, in order, or None while more are needed."""
    if not job.selective:
        need = list(range(job.episodes))
        return need if all(i in done for i in need) else None
    kept: list[int] = []
    i = 0
    while i in done and len(kept) < job.episodes:
        if job.keeps(done[i]):
            kept.append(i)
        i += 1
    return kept if len(kept) == job.episodes else None


def wanted(job: RolloutJob, done: dict[int, dict[str, Any]], limit: int) -> list[int]:
    """The next attempts to run: every missing one below the last staged, then as many new ones as
    can still be needed."""
    if not job.selective:
        return [i for i in range(job.episodes) if i not in done]
    top = max(done) + 1 if done else 0
    gaps = [i for i in range(top) if i not in done]
    successes = sum(job.keeps(m) for m in done.values())
    budget = max(job.episodes - successes - len(gaps), 0)  # optimistic: every gap may be kept
    new = list(range(top, min(top + budget, limit)))
    return gaps + new


class _DirLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _DirLock:
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise DatagenError(
                f"{self.path.parent.parent}: another generation job is writing this directory"
            ) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _claim_output(out: Path, resolved: ResolvedJob) -> Path:
    """Create/check `out` for this job; returns the job's private directory."""
    private = out / ".dreamtwin"
    job_file = private / "job.json"
    fp = resolved.fingerprint()
    if job_file.exists():
        try:
            other = json.loads(job_file.read_text())
        except json.JSONDecodeError:
            raise DatagenError(f"{job_file}: corrupted job record") from None
        if other.get("fingerprint") != fp:
            raise DatagenError(
                f"{out}: holds a different dataset (job {other.get('fingerprint')}, scene {other.get('scene')}, "
                f"policies {other.get('policies')}); choose another --out or delete it"
            )
    else:
        if out.exists() and any(p.name != ".dreamtwin" for p in out.iterdir()):
            what = "a dataset made by another job" if (out / "meta" / "info.json").exists() else "other files"
            raise DatagenError(f"{out}: holds {what}; choose another --out or delete it")
        private.mkdir(parents=True, exist_ok=True)
        j = resolved.job
        atomic_write_text(
            job_file,
            json.dumps(
                {
                    "fingerprint": fp,
                    "scene": j.scene,
                    "policies": j.policies,
                    "seed": j.seed,
                    "job": j.model_dump(mode="json"),
                },
                indent=2,
            ),
        )
    (private / "staging").mkdir(exist_ok=True)
    return private


def _in_process(job: RolloutJob, twin: DigitalTwin | None) -> bool:
    """One local worker runs here when a twin is given, or when a person answers prompts at this terminal."""
    prompt = job.robot is not None and job.robot.outcome == "prompt"
    return job.workers == 1 and (twin is not None or prompt)


def generate(job: RolloutJob, *, progress: bool = True, twin: DigitalTwin | None = None) -> dict[str, Any]:
    """Run (or finish) the job; returns the summary. `twin`: an already built DigitalTwin of the
    job's scene to use with one local worker (saves a build)."""
    from datagen.lerobot import assemble_dataset, dataset_bytes, read_info

    t0 = time.perf_counter()
    resolved = ResolvedJob.load(job)
    out = Path(job.out)
    private = _claim_output(out, resolved)
    staging = private / "staging"
    with _DirLock(private / "lock"):
        for leftover in staging.glob(".tmp-ep-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        info = read_info(out) if (out / "meta" / "info.json").exists() else None
        record = private / "done.json"
        if (
            info is not None
            and record.exists()
            and json.loads(record.read_text()).get("episodes") == job.episodes
        ):
            summary = json.loads(record.read_text())
            summary["resumed"] = "already complete"
            return summary
        done = staged(staging)
        attempts_before = len(done)
        pool = WorkerPool(
            "datagen.rollouts:EpisodeMaker.from_json",
            (job.model_dump_json(), str(staging)),
            workers=job.workers,
            backend=job.backend,
            address=job.ray_address,
            local=EpisodeMaker(resolved, staging, twin) if _in_process(job, twin) else None,
        )
        limit = resolved.max_attempts()
        arrivals: list[float] = []
        with _progress(progress, job.episodes) as bar, pool:
            bar.update(_n_kept(job, done))
            while (kept := select(job, done)) is None:
                todo = wanted(job, done, limit)
                if not todo:
                    n_ok = sum(job.keeps(m) for m in done.values())
                    what = "trusted " * job.only_trusted + "successful " * job.only_success
                    raise DatagenError(
                        f"only {n_ok} {what}episodes in {len(done)} attempts (limit {limit}); "
                        "raise max_attempts_factor or use better policies"
                    )
                for meta in pool.map_unordered("make", todo):
                    arrivals.append(time.perf_counter() - t0)
                    done[meta["attempt"]] = meta
                    bar.update(_n_kept(job, done), success=meta["success"])
        t_assemble = time.perf_counter()
        stats = assemble_dataset(out, private, [done[i] for i in kept], resolved)
        t_assemble = time.perf_counter() - t_assemble
        summary = {
            "out": str(out),
            "episodes": len(kept),
            "attempts": len(done),
            "attempts_this_run": len(done) - attempts_before,
            "success_rate_of_attempts": float(np.mean([m["success"] for m in done.values()])),
            "success_rate": float(np.mean([done[i]["success"] for i in kept])),
            "frames": int(sum(done[i]["length"] for i in kept)),
            "bytes": dataset_bytes(out),
            "policies": {p: sum(done[i]["policy"] == p for i in kept) for p in job.policies},
            "seconds": time.perf_counter() - t0,
            "assemble_seconds": t_assemble,
            "episode_done_at": arrivals,
            **stats,
        }
        atomic_write_text(record, json.dumps(summary, indent=2))
        shutil.rmtree(staging, ignore_errors=True)
        return summary


def _n_kept(job: RolloutJob, done: dict[int, dict[str, Any]]) -> int:
    if job.selective:
        return min(sum(job.keeps(m) for m in done.values()), job.episodes)
    return sum(1 for i in done if i < job.episodes)


class _progress:
    """A rich progress bar (episodes/s, ETA) or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self.n_success = self.n_seen = 0

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.p = Progress(
                TextColumn("[bold]episodes"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[succ]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.p.start()
            self.task = self.p.add_task("gen", total=self.total, rate="", succ="")
            self.t0 = time.perf_counter()
        return self

    def update(self, n: int, success: bool | None = None) -> None:
        if success is not None:
            self.n_seen += 1
            self.n_success += success
        if self.enabled:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            succ = f"success {self.n_success / self.n_seen:.0%}" if self.n_seen else ""
            self.p.update(self.task, completed=n, rate=f"{self.n_seen / dt:.2f} ep/s", succ=succ)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.p.stop()
