"""The Genesis digital twin: determinism, observations, action handling, errors, gym wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ActionError, UsageError
from scenes.spec import sample_initial_poses
from scenes.twin import ACTION_DIM, STATE_NAMES

pytestmark = pytest.mark.sim


def _actions(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.03, 0.03, (n, ACTION_DIM)).astype(np.float32)
    a[:, 3] = rng.uniform(0, 1, n)
    return a


def _run(twin, seed, actions, chunk):
    obs = [twin.reset(seed)]
    for i in range(0, len(actions), chunk):
        obs += twin.step(actions[i : i + chunk]).observations
    return obs


def test_same_seed_and_actions_give_identical_observations(push_twin):
    actions = _actions(0, 12)
    a = _run(push_twin, 7, actions, chunk=3)
    _run(push_twin, 8, _actions(1, 5), chunk=1)  # something else in between
    b = _run(push_twin, 7, actions, chunk=3)
    assert len(a) == len(b) == 13
    for oa, ob in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa.state, ob.state)
        np.testing.assert_array_equal(oa.environment_state, ob.environment_state)
        for cam in oa.images:
            np.testing.assert_array_equal(oa.images[cam], ob.images[cam])
    # and the actions really changed the scene
    assert np.linalg.norm(a[-1].state[:3] - a[0].state[:3]) > 0.02


def test_reset_draws_the_initial_state_from_the_seed(push_twin, push_spec):
    for seed in (0, 11):
        obs = push_twin.reset(seed)
        pos, quat = sample_initial_poses(push_spec, seed)["cube"]
        np.testing.assert_allclose(obs.environment_state[:3], pos, atol=1e-5)
        np.testing.assert_allclose(np.abs(obs.environment_state[3:7] @ quat), 1.0, atol=1e-5)
        np.testing.assert_allclose(obs.state[:3], push_spec.robot.init_ee_pos, atol=0.01)


def test_observation_layout(push_twin, push_spec):
    obs = push_twin.reset(0)
    cam = push_spec.cameras[0]
    img = obs.images[cam.name]
    assert img.dtype == np.uint8 and img.shape == (cam.resolution[1], cam.resolution[0], 3)
    assert img.std() > 5  # a real picture, not a blank frame
    assert obs.state.dtype == np.float32 and obs.state.shape == (len(STATE_NAMES),)
    assert obs.environment_state.shape == (7 * len(push_spec.objects),)
    assert obs.task == push_spec.task.instruction


def test_ee_delta_actions_move_the_tool_centre_point(push_twin, push_spec):
    with push_twin.rendering(False):
        start = push_twin.reset(0).state[:3]
        result = push_twin.step(np.tile([0.0, 0.02, 0.0, 0.0], (6, 1)).astype(np.float32))
        moved = result.last.state[:3] - start
        assert len(result.observations) == 6
        assert moved[1] == pytest.approx(0.12, abs=0.015) and abs(moved[0]) < 0.01 and abs(moved[2]) < 0.01
        # an oversized delta is scaled to max_delta, and the workspace floor holds
        result = push_twin.step(np.tile([0.0, 0.0, -1.0, 0.0], (15, 1)).astype(np.float32))
        assert result.last.state[2] >= push_spec.control.workspace_low[2] - 0.006


def test_gripper_command_opens_and_closes(lift_twin, lift_spec):
    with lift_twin.rendering(False):
        lift_twin.reset(0)
        opened = lift_twin.step(np.tile([0, 0, 0, 1.0], (5, 1)).astype(np.float32)).last.state[3]
        closed = lift_twin.step(np.tile([0, 0, 0, 0.0], (5, 1)).astype(np.float32)).last.state[3]
    assert opened == pytest.approx(2 * lift_spec.control.gripper_max_width, abs=0.005)
    assert closed < 0.005


@pytest.mark.parametrize(
    "action, match",
    [
        (np.array([[np.nan, 0, 0, 0]], np.float32), r"NaN/inf at \[0, 0\]"),
        (np.array([[0, 0, 0, 0], [0, np.inf, 0, 0]], np.float32), r"NaN/inf at \[1, 1\]"),
        (np.zeros((1, 3), np.float32), r"shape \[K, 4\].*got \(1, 3\)"),
        (np.zeros((0, 4), np.float32), r"shape \[K, 4\]"),
        ([["a", 0, 0, 0]], r"numeric"),
    ],
)
def test_bad_actions_give_one_line_errors(push_twin, action, match):
    push_twin.reset(0)
    with pytest.raises(ActionError, match=match) as e:
        push_twin.step(action)
    assert "\n" not in str(e.value)


def test_episode_ends_at_max_steps_and_reports_poses(push_twin, push_spec):
    with push_twin.rendering(False):
        push_twin.reset(0)
        result = push_twin.step(np.zeros((push_spec.task.max_steps + 5, 4), np.float32))
    assert result.done and not result.success and result.info["truncated"]
    assert len(result.observations) == push_spec.task.max_steps
    assert set(result.info["object_poses"]) == {"cube"}


def test_reset_rejects_unknown_options(push_twin):
    with pytest.raises(UsageError, match="unknown options"):
        push_twin.reset(0, {"lighting": 2})


def test_gym_wrapper(push_twin):
    import gymnasium as gym

    from scenes.gym_env import WorldEnv

    env = WorldEnv(push_twin)
    assert isinstance(env, gym.Env)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info["task"]
    obs2, reward, terminated, truncated, info = env.step(np.array([0.0, 0.01, 0.0, 0.0], np.float32))
    assert env.observation_space.contains(obs2) and reward == 0.0 and not terminated and not truncated
    assert env.action_space.shape == (4,) and env.action_space.high[0] == pytest.approx(0.03)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(again["state"], obs["state"])


def test_show_renders_a_state_exactly_as_simulated(push_twin):
    """A state the twin reached, shown after a reset to another seed, gives the same frame: the renderer a
    state-space world model draws its frames with."""
    push_twin.reset(5)
    for _ in range(4):
        r = push_twin.step(np.array([[0.0, 0.02, -0.02, 0.0]], np.float32))
    reached = r.last
    push_twin.reset(9)
    shown = push_twin.show(reached.state, reached.environment_state)
    assert np.array_equal(shown.images["side"], reached.images["side"])
    assert np.allclose(push_twin.proprio(), reached.state, atol=1e-5)
    with pytest.raises(UsageError, match="show needs state"):
        push_twin.show(reached.state[:4], reached.environment_state)


def test_a_state_posed_by_its_end_effector_agrees_with_itself(push_twin):
    """`posed_by_ee`: a state whose joints contradict its end effector (as a generator's may) gets the joints
    that put the hand there, its end effector and width kept; a state that agrees with itself is kept."""
    push_twin.reset(5)
    for _ in range(3):
        r = push_twin.step(np.array([[0.02, 0.01, -0.02, 0.0]], np.float32))
    s = r.last.state.copy()
    bent = s.copy()
    bent[4:] += np.array([0.05, -0.04, 0.03, 0.05, -0.03, 0.04, 0.02], np.float32)
    push_twin.show(bent, r.last.environment_state)
    assert np.linalg.norm(push_twin.proprio()[:3] - s[:3]) > 0.01  # those joints put the hand elsewhere
    posed = push_twin.posed_by_ee(bent)
    assert np.linalg.norm(posed[:3] - s[:3]) < 0.001 and posed[3] == s[3]
    push_twin.show(posed, r.last.environment_state)
    assert np.allclose(push_twin.proprio(), posed, atol=1e-5)  # its joints put the hand where it says
    # a state the twin reached keeps its end effector; its joints move only by the hand's small tilt
    # from the orientation the controller holds
    kept = push_twin.posed_by_ee(s)
    assert np.allclose(kept[:4], s[:4], atol=1e-4) and np.abs(kept[4:] - s[4:]).max() < 0.05
    with pytest.raises(UsageError, match="posed_by_ee needs"):
        push_twin.posed_by_ee(s[:4])


def test_set_state_simulates_on_from_a_given_state(push_twin):
    """`set_state` starts an episode at a state another episode reached: the next step goes the way the
    first episode's next step went, and stays put on a hold action. What synthetic transitions are
    checked against."""
    push_twin.reset(5)
    a = np.array([[0.0, 0.02, -0.02, 0.0]], np.float32)
    for _ in range(3):
        r = push_twin.step(a)
    before = push_twin.step(a).last
    s, env, target = before.state, before.environment_state, push_twin._target.copy()
    nxt = push_twin.step(a).last
    push_twin.set_state(s, env, seed=9)
    assert np.allclose(push_twin.proprio(), s, atol=1e-5)
    assert push_twin.object_poses().keys() == push_twin._initial_poses.keys()
    got = push_twin.step(a).last
    # the controller's target, which leads a moving hand, is not part of the state: a reset hand starts
    # from rest and lags the first episode's (about 1 cm of a 2.5 cm step)
    moved = np.linalg.norm(nxt.state[:3] - s[:3])
    assert np.linalg.norm(got.state[:3] - nxt.state[:3]) < 0.5 * moved
    assert np.linalg.norm(got.state[:3] - s[:3]) > 0.5 * moved
    # given the state a step earlier (velocities) and the controller's target, it goes nearly that way
    push_twin.set_state(s, env, previous=(r.last.state, r.last.environment_state), target=target)
    assert np.allclose(push_twin.proprio(), s, atol=1e-5)
    resumed = push_twin.step(a).last
    assert np.linalg.norm(resumed.state[:3] - nxt.state[:3]) < 0.1 * moved
    push_twin.set_state(s, env)
    held = push_twin.step(np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)).last
    assert np.linalg.norm(held.state[:3] - s[:3]) < 0.005  # (the arm settles under its controller)
    assert np.linalg.norm(held.environment_state[:3] - env[:3]) < 0.001


def test_replay_steps_recorded_actions_open_loop(push_twin):
    """`replay(seed, actions)` is a reset to the seed and the actions stepped as one chunk: the expert's
    recorded actions solve the task again, the same actions from another seed's cube do not, and no
    actions is a failure without a step."""
    from policy_eval.policies import make_policy

    policy = make_policy("expert", push_twin.spec)
    obs, recorded, result = push_twin.reset(4), [], None
    policy.reset(seed=4)
    with push_twin.rendering(False):
        while result is None or not result.done:
            recorded.append(policy.act(obs))
            result = push_twin.step(recorded[-1])
            obs = result.last
        assert result.info["success"]
        actions = np.concatenate(recorded)
        assert push_twin.replay(4, actions)
        np.testing.assert_array_equal(push_twin.proprio(), obs.state)
        cube = {k: sample_initial_poses(push_twin.spec, k)["cube"][0] for k in range(4, 40)}
        far = next(k for k in cube if np.linalg.norm(cube[k][:2] - cube[4][:2]) > 0.05)  # the cube 5 cm away
        assert not push_twin.replay(far, actions)
        assert not push_twin.replay(4, actions[:0]) and push_twin._step_count == 0
