"""`dreamtwin datagen imagine`: episodes imagined by a video world model from the twin's initial states,
written as a synthetic LeRobot dataset (resumable), that a BC policy can be fine-tuned on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks.conftest import tiny_world_model  # noqa: F401  (a session fixture)
from tests.conftest import PUSH

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def imagine_job(model, **kw):
    """image_expert imagined by `model` from seed 9300 on, one sample of two sampler steps a frame."""
    from datagen.rollouts import RolloutJob

    base = {"scene": str(PUSH), "world": f"worldmodel:{model}", "policies": {"image_expert": 1.0}}
    return RolloutJob(**base, seed=9300, samples=1, sampler_steps=2, **kw)


def test_imagined_episodes_become_a_synthetic_dataset(push_twin, tiny_world_model, tmp_path):  # noqa: F811
    from datagen.lerobot import verify_dataset
    from datagen.rollouts import generate
    from datagen.windows import load_episodes

    _, model, _ = tiny_world_model
    job = imagine_job(model, episodes=2, out=str(tmp_path / "imagined"))
    summary = generate(job, progress=False, twin=push_twin)
    assert summary["episodes"] == 2
    assert generate(job, progress=False, twin=push_twin)["resumed"] == "already complete"
    verify_dataset(tmp_path / "imagined")
    doc = json.loads((tmp_path / "imagined" / "meta" / "dreamtwin.json").read_text())
    assert doc["synthetic"] and doc["world"] == f"worldmodel:{model}"
    arrays, meta = load_episodes(tmp_path / "imagined")
    assert all(np.isfinite(a["env_state"]).all() for a in arrays)  # the imagined state read-out
    # the first frame is the twin's; every later one is imagined
    first = push_twin.reset(9300).images[meta["cameras"][0]]
    frames = arrays[0]["frames"][:, 0].transpose(0, 2, 3, 1)
    assert np.abs(frames[0].astype(int) - first.astype(int)).mean() < 3  # (video coding)
    assert len(frames) > 2 and np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 0.5


def test_imagined_episodes_record_their_trust_and_only_trusted_keeps_the_trusted(
    push_twin,
    tiny_world_model,  # noqa: F811
    tmp_path,
):
    import shutil

    from datagen.rollouts import DatagenError, generate
    from policy_eval.trust import TrustCalibration, write_calibration
    from worldmodels.ensemble import DynamicsEnsemble, EnsembleConfig

    _, trained, _ = tiny_world_model
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    cfg = EnsembleConfig(members=3, elites=2, hidden=16, layers=1, state_dim=11, env_dim=7, action_dim=4)
    DynamicsEnsemble(cfg).save_pretrained(model / "ens")

    def calibrate(bias: float) -> None:  # trust = sigmoid(bias): everything trusted, or nothing
        write_calibration(model / "trust.json", TrustCalibration(ensemble="ens", bias=bias, weights={}))

    calibrate(5.0)
    job = imagine_job(model, episodes=2, out=str(tmp_path / "trusted"), only_trusted=True)
    assert generate(job, progress=False, twin=push_twin)["episodes"] == 2
    doc = json.loads((tmp_path / "trusted" / "meta" / "dreamtwin.json").read_text())
    assert [e["trusted"] for e in doc["episodes"]] == [True, True]
    assert all(e["trust"] == pytest.approx(1 / (1 + np.exp(-5.0))) for e in doc["episodes"])

    calibrate(-5.0)
    job = imagine_job(model, episodes=1, out=str(tmp_path / "none"), only_trusted=True, max_attempts_factor=2)
    with pytest.raises(DatagenError, match="only 0 trusted episodes in 2 attempts"):
        generate(job, progress=False, twin=push_twin)
    (model / "trust.json").unlink()
    with pytest.raises(DatagenError, match="trust.json does not exist"):
        generate(job.model_copy(update={"out": str(tmp_path / "gone")}), progress=False, twin=push_twin)
