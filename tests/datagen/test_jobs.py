"""The generation job: crash safety, identical content whatever the workers or backend, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.errors import SpecError
from datagen.lerobot import LeRobotDataset, verify_dataset
from datagen.rollouts import DatagenError, RolloutJob, generate, select, wanted
from tests.conftest import LIFT, PUSH, ROOT
from tests.datagen.conftest import RANDOMIZE, job_dict


def assert_same_episodes(a, b, n):
    da, db = LeRobotDataset(a), LeRobotDataset(b)
    for k in range(n):
        ea, eb = da.episode(k), db.episode(k)
        for col in (
            "action",
            "observation.state",
            "observation.environment_state",
            "next.success",
            "seed",
            "randomization",
            "policy",
        ):
            np.testing.assert_array_equal(ea[col], eb[col], err_msg=f"episode {k} column {col}")


def cli(out, episodes):
    return [
        sys.executable,
        "-m",
        "dreamtwin",
        "datagen",
        "rollouts",
        "--scene",
        str(PUSH),
        "--policy",
        "expert,image_mild",
        "--episodes",
        str(episodes),
        "--seed",
        "0",
        "--out",
        str(out),
        "--randomize",
        str(RANDOMIZE),
    ]


@pytest.mark.sim
@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_finishes_exactly_n_episodes(
    tmp_path, small_dataset, genesis_kernel_cache
):
    out = tmp_path / "killed"
    staging = out / ".dreamtwin" / "staging"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cli(out, 6), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 900
    while time.time() < deadline and len(list(staging.glob("ep-*"))) < 2:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.2)
    time.sleep(0.7)  # land somewhere inside the next episode
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged_before = len(list(staging.glob("ep-*")))
    assert 2 <= staged_before < 6
    assert not (out / "meta" / "info.json").exists()
    done = subprocess.run(cli(out, 6), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = verify_dataset(out)
    assert report["episodes"] == 6
    ds = LeRobotDataset(out)
    assert sorted(int(ds.episode(k)["seed"][0]) for k in range(6)) == list(
        range(6)
    )  # none twice, none missing
    summary = json.loads((out / ".dreamtwin" / "done.json").read_text())
    assert summary["attempts_this_run"] == 6 - staged_before
    # the same job (fewer episodes) gives the same first episodes as the uninterrupted in-process run
    assert_same_episodes(out, small_dataset[0], 6)


@pytest.mark.sim
@pytest.mark.slow
def test_two_local_workers_give_the_same_content(tmp_path, small_dataset, genesis_kernel_cache):
    out = tmp_path / "w2"
    summary = generate(RolloutJob.model_validate(job_dict(out, episodes=4, workers=2)), progress=False)
    assert summary["episodes"] == 4
    assert_same_episodes(out, small_dataset[0], 4)


@pytest.mark.sim
@pytest.mark.slow
def test_ray_backend_gives_the_same_content(tmp_path, small_dataset, genesis_kernel_cache):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    summary = generate(
        RolloutJob.model_validate(job_dict(out, episodes=3, workers=2, backend="ray")), progress=False
    )
    assert summary["episodes"] == 3
    assert_same_episodes(out, small_dataset[0], 3)


@pytest.mark.sim
def test_output_holding_another_dataset_is_refused(small_dataset, tmp_path):
    out, _ = small_dataset
    with pytest.raises(DatagenError, match="holds a different dataset") as e:
        generate(RolloutJob.model_validate(job_dict(out, seed=5)), progress=False)
    assert "\n" not in str(e.value)
    (tmp_path / "x" / "notes.txt").parent.mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(DatagenError, match="holds other files"):
        generate(RolloutJob.model_validate(job_dict(tmp_path / "x")), progress=False)


@pytest.mark.sim
def test_rerun_of_a_finished_job_does_nothing(small_dataset, push_twin):
    out, _ = small_dataset
    before = (out / "data/chunk-000/file-000.parquet").stat().st_mtime_ns
    summary = generate(RolloutJob.model_validate(job_dict(out)), progress=False, twin=push_twin)
    assert summary["resumed"] == "already complete"
    assert (out / "data/chunk-000/file-000.parquet").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "text,match",
    [
        (
            "version: 1\nobject_colour: {hue_deg: [0, 1]}\n",
            r"bad\.yaml: object_colour: unknown key; allowed: .*object_color",
        ),
        ("version: 1\nmass_scale: [1.5, 0.5]\n", r"bad\.yaml: mass_scale: .*low must be <= high"),
        ("version: 1\nlight: {intensity_scale: [0, 1]}\n", r"bad\.yaml: light\.intensity_scale: .*positive"),
    ],
)
def test_malformed_randomization_yaml_gives_one_line(tmp_path, text, match):
    from scenes.randomization import load_randomization

    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=match) as e:
        load_randomization(p)
    assert "\n" not in str(e.value)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfriction_scale: [2, 1]\n")
    from typer.testing import CliRunner

    from dreamtwin.cli import app

    r = CliRunner().invoke(
        app,
        [
            "datagen",
            "rollouts",
            "--scene",
            str(PUSH),
            "--policy",
            "expert",
            "--episodes",
            "1",
            "--out",
            str(tmp_path / "o"),
            "--randomize",
            str(bad),
        ],
    )
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.yaml: friction_scale" in lines[0]
    r = CliRunner().invoke(app, ["datagen", "verify", str(tmp_path)])
    assert r.exit_code == 2 and "meta/info.json: not found" in r.output


def test_only_success_keeps_the_first_n_successful_attempts():
    job = RolloutJob(scene="x", policies={"expert": 1.0}, episodes=3, only_success=True)
    ok = lambda *s: {i: {"success": v} for i, v in s}  # noqa: E731
    assert wanted(job, {}, 60) == [0, 1, 2]
    done = ok((0, True), (1, False), (2, True))
    assert select(job, done) is None
    assert wanted(job, done, 60) == [3]
    done.update(ok((3, False)))
    assert wanted(job, done, 60) == [4]
    done.update(ok((5, True), (6, True)))  # 4 is missing (a killed worker): it is run first
    assert select(job, done) is None and wanted(job, done, 60) == [4]
    done.update(ok((4, False)))
    assert select(job, done) == [0, 2, 5]
    assert wanted(job, {}, 2) == [0, 1]  # the attempt limit
    plain = RolloutJob(scene="x", policies={"expert": 1.0}, episodes=3)
    assert wanted(plain, ok((1, False)), 3) == [0, 2] and select(plain, ok((0, 1), (1, 0), (2, 0))) == [
        0,
        1,
        2,
    ]


def test_only_trusted_keeps_the_first_n_trusted_successes_of_a_world_model():
    job = RolloutJob(
        scene="x",
        policies={"expert": 1.0},
        episodes=2,
        only_success=True,
        only_trusted=True,
        world="worldmodel:m",
    )
    done = {
        0: {"success": True, "trusted": False},
        1: {"success": False, "trusted": True},
        2: {"success": True, "trusted": True},
    }
    assert select(job, done) is None and wanted(job, done, 60) == [3]
    done[3] = {"success": True, "trusted": True}
    assert select(job, done) == [2, 3]
    trusted_only = job.model_copy(update={"only_success": False})
    assert select(trusted_only, done) == [1, 2]  # trusted, whatever the verdict
    with pytest.raises(ValueError, match="only_trusted keeps what a video world model"):
        RolloutJob(scene="x", policies={"expert": 1.0}, episodes=2, only_trusted=True)


def test_policy_mix_follows_the_weights():
    from datagen.rollouts import ResolvedJob

    job = RolloutJob(scene="x", policies={"expert": 3.0, "random": 1.0}, episodes=400)
    r = ResolvedJob(job, None, None)
    picks = [r.attempt(i) for i in range(400)]
    assert [s for s, _ in picks] == list(range(400))
    share = sum(p == "expert" for _, p in picks) / 400
    assert 0.68 < share < 0.82
    assert picks == [r.attempt(i) for i in range(400)]  # a function of (job, i) only


@pytest.mark.sim
def test_an_ensemble_imagines_a_synthetic_dataset(tmp_path, push_twin, push_spec):
    """`world: ensemble:PATH`: episodes imagined by a dynamics ensemble under each variant's physics, drawn by
    the twin, written as a LeRobot dataset tagged synthetic."""
    from worldmodels.ensemble import DynamicsEnsemble, EnsembleConfig

    names = ["cube.mass_scale", "cube.friction_scale", "table.friction_scale"]  # the randomised physics
    cfg = EnsembleConfig(
        members=3,
        elites=2,
        hidden=16,
        layers=1,
        physics=names,
        state_dim=11,
        env_dim=7,
        action_dim=4,
        scene=push_spec.model_dump(mode="json"),
    )
    DynamicsEnsemble(cfg).save_pretrained(tmp_path / "ens")
    out = tmp_path / "synthetic"
    job = job_dict(out, episodes=2, policies={"expert": 1.0}, world=f"ensemble:{tmp_path / 'ens'}")
    try:
        generate(RolloutJob.model_validate(job), progress=False, twin=push_twin)
    finally:
        push_twin.set_variant(push_spec)
    meta = json.loads((out / "meta" / "dreamtwin.json").read_text())
    assert meta["synthetic"] is True and meta["world"].startswith("ensemble:")
    assert verify_dataset(out)["episodes"] == 2
    with pytest.raises(Exception, match="expected 'twin', 'worldmodel:PATH' or 'ensemble:PATH'"):
        RolloutJob.model_validate(job_dict(tmp_path / "y", world="splat:assets/worldmodels/push_cube_tiny"))


@pytest.mark.sim
def test_after_success_records_the_lifted_cube_held_up(tmp_path, lift_twin):
    """`after_success: 6`: the expert's lift goes on six steps past its first success; the dataset shows
    the cube held above the success height on every one of them, and `next.success` from then on."""
    from datagen.windows import episode_arrays

    out = tmp_path / "lift"
    job = job_dict(
        out, scene=str(LIFT), policies={"expert": 1.0}, episodes=1, randomize=None, after_success=6
    )
    generate(RolloutJob.model_validate(job), progress=False, twin=lift_twin)
    assert verify_dataset(out)["episodes"] == 1
    arr = episode_arrays(LeRobotDataset(out), 0, [], frames=False)
    solved = np.flatnonzero(arr["success"])
    assert len(solved) == 7 and solved[-1] == len(arr["success"]) - 1  # the first success + 6 frames after it
    assert np.all(np.diff(solved) == 1)
    height = arr["env_state"][solved, 2] - arr["env_state"][0, 2]
    assert np.all(height >= 0.10)
    with pytest.raises(Exception, match="after_success records the twin's own rollouts"):
        RolloutJob.model_validate(job_dict(tmp_path / "y", after_success=3, world="ensemble:runs/x"))
