"""Policies over the network: openpi's wire format both ways (with the real `openpi_client`), hostile
input, API keys, reconnection, and remote episodes identical to in-process ones."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect
from websockets.sync.server import serve

from common.errors import SpecError
from common.types import Observation
from policy_eval.remote import (
    PolicyServer,
    RemoteConfig,
    RemotePolicy,
    RemotePolicyError,
    WireError,
    observation_to_wire,
    packb,
    resize_with_pad,
    unpackb,
)
from tests.conftest import PUSH


def _obs(spec, seed=0):
    rng = np.random.default_rng(seed)
    images = {
        c.name: rng.integers(0, 256, (c.resolution[1], c.resolution[0], 3), dtype=np.uint8)
        for c in spec.cameras
    }
    return Observation(
        images=images, state=rng.normal(size=11).astype(np.float32), task=spec.task.instruction
    )


@pytest.fixture()
def server(push_spec):
    with PolicyServer("random", push_spec, port=0) as srv:
        yield srv


def _still_serves(srv, spec):
    c = WebsocketClientPolicy(srv.url)
    out = c.infer(observation_to_wire(_obs(spec)))
    assert out["actions"].shape == (1, 4)
    c._ws.close()


# ------------------------------------------------------------------------------------------ wire format
def test_wire_format_matches_openpi_both_ways():
    msg = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.zeros((2, 0, 3), np.uint8),
        "s": np.float32(2.5),
        "i": np.int32(-7),
        "nested": [{"x": np.array([True, False])}, "text", 3],
    }
    for packed in (packb(msg), msgpack_numpy.packb(msg)):
        assert packb(msg) == msgpack_numpy.packb(msg)  # byte for byte the same message
        for out in (unpackb(packed), msgpack_numpy.unpackb(packed)):
            np.testing.assert_array_equal(out["a"], msg["a"])
            assert out["a"].dtype == np.float32 and out["b"].shape == (2, 0, 3)
            assert out["s"] == 2.5 and out["s"].dtype == np.float32 and out["i"] == -7
            np.testing.assert_array_equal(out["nested"][0]["x"], [True, False])


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, "not a plain"),
        ({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]}, "needs 8 bytes"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [2**40, 2**40]}, "needs"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "non-negative"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "[('a', '<f4')]", b"shape": [0]}, "dtype"),
        ({b"__npgeneric__": True, b"data": "x", b"dtype": "<f8"}, "must be a number"),
    ],
)
def test_hostile_arrays_are_refused(array, needle):
    import msgpack

    with pytest.raises(WireError, match=needle):
        unpackb(msgpack.packb({"x": array}))


def test_garbage_is_a_wire_error():
    with pytest.raises(WireError, match="not a msgpack message"):
        unpackb(b"\xc1\xc1garbage")
    with pytest.raises(WireError, match="exceeds the limit"):
        unpackb(b"\0" * 2048, max_bytes=1024)


# ---------------------------------------------------------------------------- openpi's client, our server
def test_openpi_client_drives_our_server(server, push_spec):
    client = WebsocketClientPolicy(server.url)
    meta = client.get_server_metadata()
    assert meta["policy"] == "random" and meta["scene"] == "push_cube" and meta["action_dim"] == 4
    out = client.infer(observation_to_wire(_obs(push_spec)))
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (1, 4)
    assert out["server_timing"]["infer_ms"] >= out["policy_timing"]["infer_ms"] >= 0
    # openpi's action-chunk broker consumes our chunks one action at a time
    broker = ActionChunkBroker(client, action_horizon=1)
    assert broker.infer(observation_to_wire(_obs(push_spec)))["actions"].shape == (4,)
    client._ws.close()


def test_server_binds_loopback_and_answers_healthz(server):
    assert server.host == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xc1\xc1 not msgpack", "not a msgpack message"),
        ("a text frame", "expected a binary msgpack frame"),
        ("wrong dtype", "observation/state: expected a float32 array"),
        ("wrong shape", "expected [128, 128, 3]"),
        ("unknown key", "unknown observation keys ['joint_velocity']"),
    ],
)
def test_bad_requests_get_an_error_frame_and_the_server_keeps_serving(server, push_spec, payload, needle):
    msg = observation_to_wire(_obs(push_spec))
    if payload == "wrong dtype":
        msg["observation/state"] = msg["observation/state"].astype(np.float64)
        payload = packb(msg)
    elif payload == "wrong shape":
        msg["observation/images/side"] = msg["observation/images/side"][:64]
        payload = packb(msg)
    elif payload == "unknown key":
        payload = packb({**msg, "joint_velocity": np.zeros(7, np.float32)})
    with connect(server.url, max_size=None) as ws:
        ws.recv()  # metadata
        ws.send(payload)
        error = ws.recv(timeout=10)
        assert isinstance(error, str) and needle in error
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1011
    _still_serves(server, push_spec)
    assert server.stats["errors"] == 1


def test_a_100_mb_message_is_refused_and_the_server_keeps_serving(server, push_spec):
    ws = connect(server.url, max_size=None)
    ws.recv()
    with pytest.raises(Exception):  # noqa: B017 - the server closes the link while or after we send
        ws.send(packb({"observation/state": np.zeros(25 * 2**20, np.float32)}))
        ws.recv(timeout=30)
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
    _still_serves(server, push_spec)
    # and our client names the limit
    policy = RemotePolicy(RemoteConfig(url=server.url, retries=0), push_spec)
    big = _obs(push_spec)
    big = Observation(images=big.images, state=np.zeros(10 * 2**20, np.float32), task=big.task)
    with pytest.raises(RemotePolicyError, match="over its size limit"):
        policy.act(big)


def test_dropped_connection_mid_episode(push_spec):
    srv = PolicyServer("random", push_spec, port=0).start()
    policy = RemotePolicy(RemoteConfig(url=srv.url, retries=2, backoff_s=0.05), push_spec)
    policy.reset(1)
    policy.act(_obs(push_spec))
    # the client's link drops: the next request reconnects, restarts the served policy on the seed, goes on
    policy._ws.close()
    assert policy.act(_obs(push_spec)).shape == (1, 4) and policy.reconnects >= 1
    # a client that vanishes mid-episode leaves the server serving
    raw = connect(srv.url)
    raw.recv()
    raw.socket.close()
    _still_serves(srv, push_spec)
    # the server goes away: a clear error after the retries, not a hang
    srv.close()
    t0 = time.perf_counter()
    with pytest.raises(RemotePolicyError, match="is gone .*2 reconnections tried|cannot connect"):
        policy.act(_obs(push_spec))
    assert time.perf_counter() - t0 < 10


def test_api_key(push_spec, monkeypatch):
    with PolicyServer("random", push_spec, port=0, api_key="s3cret") as srv:
        with pytest.raises(Exception, match="401"):
            WebsocketClientPolicy(srv.url)
        with pytest.raises(Exception, match="401"):
            WebsocketClientPolicy(srv.url, api_key="wrong")
        assert WebsocketClientPolicy(srv.url, api_key="s3cret").get_server_metadata()["policy"] == "random"
        monkeypatch.setenv("DT_TEST_KEY", "wrong")
        bad = RemotePolicy(RemoteConfig(url=srv.url, api_key_env="DT_TEST_KEY", retries=0), push_spec)
        with pytest.raises(RemotePolicyError, match="401"):
            bad.reset(0)
        monkeypatch.setenv("DT_TEST_KEY", "s3cret")
        good = RemotePolicy(RemoteConfig(url=srv.url, api_key_env="DT_TEST_KEY"), push_spec)
        good.reset(0)
        assert good.act(_obs(push_spec)).shape == (1, 4)
    monkeypatch.delenv("DT_TEST_KEY")
    with pytest.raises(SpecError, match="DT_TEST_KEY is not set"):
        RemotePolicy(RemoteConfig(url="ws://127.0.0.1:1", api_key_env="DT_TEST_KEY"), push_spec)


# ---------------------------------------------------------------------------- our client, openpi's packer
class OpenpiStyleServer:
    """A server written the way openpi's `WebsocketPolicyServer` is, on `openpi_client.msgpack_numpy`:
    metadata first, an 8-step chunk per request under DROID-style keys, errors as text + close 1011."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.server = serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, ws) -> None:
        import traceback

        packer = msgpack_numpy.Packer()
        ws.send(packer.pack({"model": "pi0-fake", "action_horizon": 8}))
        while True:
            try:
                obs = msgpack_numpy.unpackb(ws.recv())
            except Exception:
                return
            try:
                self.seen.append(obs)
                img = obs["observation/exterior_image_1_left"]
                if img.shape != (224, 224, 3):
                    raise ValueError(f"image shape {img.shape}")
                base = float(obs["observation/gripper_position"][0])
                actions = np.tile(np.array([0.01, 0.0, -0.01, base]), (8, 1))  # float64, as numpy gives
                ws.send(packer.pack({"actions": actions, "server_timing": {"infer_ms": 1.0}}))
            except Exception:
                ws.send(traceback.format_exc())
                ws.close(code=1011, reason="Internal server error")
                return


def test_our_client_drives_an_openpi_style_server(push_spec):
    srv = OpenpiStyleServer()
    cfg = RemoteConfig(
        url=f"ws://127.0.0.1:{srv.port}",
        keys={
            "observation/exterior_image_1_left": "images.side",
            "observation/gripper_position": "state[3:4]",
            "observation/joint_position": "state[4:11]",
            "prompt": "task",
        },
        image_size=(224, 224),
        action_horizon=4,
    )
    policy = RemotePolicy(cfg, push_spec)
    policy.reset(3)  # an openpi server is never sent our reset extension (it would fail on it)
    obs = _obs(push_spec)
    chunk = policy.act(obs)
    assert chunk.dtype == np.float32 and chunk.shape == (4, 4)
    np.testing.assert_allclose(chunk[:, 3], obs.state[3])
    sent = srv.seen[-1]
    assert set(sent) == set(cfg.keys) and sent["prompt"] == push_spec.task.instruction
    np.testing.assert_array_equal(sent["observation/joint_position"], obs.state[4:11])
    # an error on the server comes back as one line naming it
    bad = RemotePolicy(cfg.model_copy(update={"image_size": (100, 100)}), push_spec)
    with pytest.raises(RemotePolicyError, match=r"failed: ValueError: image shape \(100, 100, 3\)"):
        bad.act(obs)


def test_resize_with_pad_keeps_the_aspect_ratio():
    img = np.full((60, 120, 3), 200, np.uint8)
    out = resize_with_pad(img, 100, 100)
    assert out.shape == (100, 100, 3)
    assert out[:25].max() == 0 and out[75:].max() == 0 and out[30:70].min() == 200


def test_remote_names_and_configs(tmp_path, push_spec):
    from policy_eval.policies import policy_info

    assert policy_info("remote:ws://127.0.0.1:8000").description == "policy served at ws://127.0.0.1:8000"
    with pytest.raises(SpecError, match="expected ws://host:port"):
        policy_info("remote:http://x")
    f = tmp_path / "pi0.yaml"
    f.write_text("type: remote\nurl: ws://10.0.0.2:8000\nprivileged: true\nkeyz: {}\n")
    with pytest.raises(SpecError, match="keyz"):
        policy_info(str(f))
    f.write_text("type: remote\nurl: ws://10.0.0.2:8000\nkeys: {a: images.side, b: joints}\n")
    with pytest.raises(SpecError, match="'joints' is not one of"):
        policy_info(str(f))
    f.write_text("type: remote\nurl: ws://10.0.0.2:8000\nprivileged: true\n")
    assert policy_info(str(f)).privileged


def test_unreachable_server_is_a_clear_error(push_spec):
    policy = RemotePolicy(RemoteConfig(url="ws://127.0.0.1:9", retries=1, backoff_s=0.01), push_spec)
    with pytest.raises(RemotePolicyError, match=r"ws://127.0.0.1:9: cannot connect .*\(1 retries\)"):
        policy.reset(0)


# ------------------------------------------------------------------------- remote == in-process, episodes
@pytest.mark.sim
def test_remote_episodes_equal_in_process_ones(push_twin, push_spec, tmp_path):
    from policy_eval.evaluate import EvalConfig, run_eval
    from policy_eval.policies import make_policy
    from policy_eval.runner import rollout

    with PolicyServer("image_mild", push_spec, port=0) as srv:
        name = f"remote:{srv.url}"
        for seed in (11, 12):
            local = rollout(push_twin, make_policy("image_mild", push_spec, 0), seed)
            remote = rollout(push_twin, make_policy(name, push_spec, 0), seed)
            np.testing.assert_array_equal(local.actions(), remote.actions())  # bit for bit
            assert local.length > 5
            assert local.success == remote.success
        rows = {}
        for label, policy in (("local", "image_mild"), ("remote", name)):
            cfg = EvalConfig(
                scene=str(PUSH),
                policies=[policy],
                episodes=3,
                seed=20,
                out=str(tmp_path / label),
                render=True,
                videos=False,
            )
            run_eval(cfg, progress=False, world=push_twin)
            rows[label] = [
                json.loads(line) for line in (tmp_path / label / "episodes.jsonl").read_text().splitlines()
            ]
        keys = ("seed", "success", "length", "first_success_step", "events")
        assert [{k: r[k] for k in keys} for r in rows["local"]] == [
            {k: r[k] for k in keys} for r in rows["remote"]
        ]
        assert srv.stats["errors"] == 0
