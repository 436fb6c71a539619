"""`type: noisy` policies: a base policy's actions plus seeded Gaussian noise (exploration)."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import SpecError
from common.types import Observation
from policy_eval.policies import make_policy, policy_info


class _Still:
    privileged = False

    def reset(self, seed=None):
        pass

    def act(self, obs):
        return np.array([[0.01, 0.0, 0.0, 1.0]], np.float32)


def _obs(spec):
    cam = spec.cameras[0]
    w, h = cam.resolution
    return Observation(
        images={cam.name: np.zeros((h, w, 3), np.uint8)}, state=np.zeros(11, np.float32), task=""
    )


def test_noise_is_seeded_per_episode_and_per_dimension(tmp_path, push_spec):
    from policy_eval.policies.noisy import NoisyPolicy

    p = NoisyPolicy(_Still(), [0.01, 0.02, 0.0, 0.0], 4, seed=3)
    draws = []
    for seed in (5, 5, 6):
        p.reset(seed)
        draws.append(np.concatenate([p.act(None) for _ in range(400)]))
    np.testing.assert_array_equal(draws[0], draws[1])  # the same episode seed: the same noise
    assert not np.array_equal(draws[0], draws[2])
    d = draws[0] - np.array([0.01, 0.0, 0.0, 1.0], np.float32)
    assert d[:, 2:].std() == 0 and abs(d[:, 0].std() - 0.01) < 0.002 and abs(d[:, 1].std() - 0.02) < 0.004
    assert abs(d[:, 0].mean()) < 0.002


def test_noisy_yaml_wraps_any_policy(tmp_path, push_spec):
    f = tmp_path / "explore.yaml"
    f.write_text("type: noisy\nbase: random\naction_std: 0.01\n")
    info = policy_info(str(f))
    assert not info.privileged and "random" in info.description
    pol = make_policy(str(f), push_spec, 0)
    pol.reset(1)
    assert pol.act(_obs(push_spec)).shape == (1, 4)
    f.write_text("type: noisy\nbase: expert\naction_std: 0.01\n")
    assert policy_info(str(f)).privileged  # the base's access to the simulator state carries over
    f.write_text("type: noisy\nbase: no_such_policy\naction_std: 0.01\n")
    with pytest.raises(Exception, match="no_such_policy"):
        policy_info(str(f))
    f.write_text("type: noisy\nbase: random\naction_std: -1\n")
    with pytest.raises(SpecError, match="action_std"):
        policy_info(str(f))
    f.write_text("type: noisy\nbase: random\naction_std: [0.1, 0.1]\n")
    with pytest.raises(SpecError, match="4 dimensions"):
        make_policy(str(f), push_spec, 0)
