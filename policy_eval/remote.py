"""Policies over the network, on openpi's websocket wire format, both ways.

The wire format is the one `openpi_client` speaks (`WebsocketClientPolicy`, `msgpack_numpy`):
- every message is msgpack; a numpy array travels as a map with byte-string keys
  `{b"__ndarray__": True, b"data": array.tobytes(), b"dtype": array.dtype.str, b"shape": array.shape}`,
  a numpy scalar as `{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}`;
- on connect the server sends its metadata (a map) first; then each request is a packed observation
  map and each reply a map with `"actions"` [action_horizon, action_dim] plus `"server_timing"` and
  `"policy_timing"` (milliseconds);
- a failure goes back as a text frame (the error) followed by close code 1011;
- `GET /healthz` answers 200; an `Authorization: Api-Key <key>` header when the server asks for one.

`PolicyServer` serves any registered policy (or checkpoint, or policy YAML) on that format, one policy
instance per connection, loopback by default, with a bounded message size; a malformed, oversized or
wrong-typed message closes that connection with an error and the server keeps serving. Our
observation keys are `observation/images/<camera>` (uint8 [H, W, 3]), `observation/state` (float32),
`observation/environment_state` (float32, privileged policies only) and `prompt`.

`RemotePolicy` is the `Policy` protocol over such a server (ours or an openpi one): `remote:ws://host:port`
as a policy name uses our keys; a `type: remote` YAML (`RemoteConfig`) maps our cameras and proprio to
the keys another server expects, resizes images with padding, executes the first `action_horizon`
actions of each chunk and sets timeouts and reconnection. With a server of ours, `reset(seed)` resets
the served policy too (an extension openpi servers do not advertise and are never sent), so a policy
served remotely gives the same episodes, bit for bit, as the same policy in process.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import threading
import time
import traceback
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from common.config import Strict, load_model
from common.errors import DreamTwinError, SpecError
from common.types import Observation, Policy
from scenes.spec import SceneSpec

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_MAX_MESSAGE_BYTES = 32 * 2**20
PROTOCOL = "dreamtwin-policy/1"  # advertised in the server's metadata under "dreamtwin"
RESET_KEY = "dreamtwin/reset"
IMAGE_KEY, STATE_KEY, ENV_KEY, PROMPT_KEY = (
    "observation/images/",
    "observation/state",
    "observation/environment_state",
    "prompt",
)
_MAX_DIMS = 8


class RemotePolicyError(DreamTwinError):
    """The policy server is unreachable, gone, or answered with an error or a malformed reply."""


class WireError(DreamTwinError, ValueError):
    """A message that is not valid on the wire (bad msgpack, an array that does not add up, wrong keys)."""


# ---------------------------------------------------------------------------------------- wire format
def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in ("V", "O", "c", "U", "S", "M", "m"):
        raise WireError(f"arrays of dtype {obj.dtype} cannot go on the wire")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"{type(obj).__name__} cannot go on the wire")


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str) or len(text) > 8:
        raise WireError(f"array dtype must be a short string like '<f4', got {text!r}")
    try:
        dt = np.dtype(text)
    except TypeError:
        raise WireError(f"unknown array dtype {text!r}") from None
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise WireError(f"array dtype {text!r} is not a plain boolean, integer or float type")
    return dt


def _decode(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" in obj:
        dt = _dtype(obj.get(b"dtype"))
        shape, data = obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, list | tuple) or len(shape) > _MAX_DIMS:
            raise WireError(f"array shape must be a list of at most {_MAX_DIMS} sizes, got {shape!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise WireError(f"array shape must hold non-negative integers, got {shape!r}")
        if not isinstance(data, bytes):
            raise WireError("array data must be bytes")
        n = math.prod(shape) * dt.itemsize  # exact: no wrap-around for hostile sizes
        if n != len(data):
            raise WireError(
                f"array of shape {list(shape)} and dtype {dt.str} needs {n} bytes, got {len(data)}"
            )
        return np.frombuffer(data, dtype=dt).reshape(shape).copy()
    if b"__npgeneric__" in obj:
        dt = _dtype(obj.get(b"dtype"))
        value = obj.get(b"data")
        if not isinstance(value, bool | int | float):
            raise WireError(f"numpy scalar data must be a number, got {type(value).__name__}")
        try:
            return dt.type(value)
        except (OverflowError, ValueError) as e:
            raise WireError(f"numpy scalar {value!r} does not fit {dt.str}: {e}") from None
    return obj


def packb(obj: Any) -> bytes:
    """`obj` (maps, lists, numbers, strings, numpy arrays and scalars) as one msgpack message."""
    import msgpack

    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """One msgpack message; WireError for anything malformed (nothing from the network is trusted)."""
    import msgpack

    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError) as e:  # malformed input, as msgpack says it
        raise WireError(f"not a msgpack message ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------- observations
def _array(msg: dict[str, Any], key: str, dtype: type, ndim: int) -> np.ndarray:
    a = msg[key]
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
        got = f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
        raise WireError(f"{key}: expected a {np.dtype(dtype)} array with {ndim} dimension(s), got {got}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise WireError(f"{key}: holds NaN or inf")
    return a


def observation_to_wire(obs: Observation, *, privileged: bool = False) -> dict[str, Any]:
    """Our observation under our own wire keys."""
    msg: dict[str, Any] = {IMAGE_KEY + k: np.ascontiguousarray(v) for k, v in obs.images.items()}
    msg[STATE_KEY] = np.asarray(obs.state, np.float32)
    msg[PROMPT_KEY] = obs.task
    if privileged and obs.environment_state is not None:
        msg[ENV_KEY] = np.asarray(obs.environment_state, np.float32)
    return msg


def observation_from_wire(msg: Any, spec: SceneSpec, *, privileged: bool) -> Observation:
    """A request under our wire keys, checked against the scene's cameras, as an `Observation`."""
    if not isinstance(msg, dict) or not all(isinstance(k, str) for k in msg):
        raise WireError(f"an observation must be a map with string keys, got {type(msg).__name__}")
    cams = {c.name: c for c in spec.cameras}
    allowed = {IMAGE_KEY + c for c in cams} | {STATE_KEY, PROMPT_KEY} | ({ENV_KEY} if privileged else set())
    unknown = sorted(set(msg) - allowed)
    if unknown:
        raise WireError(f"unknown observation keys {unknown}; this server reads {sorted(allowed)}")
    needed = {IMAGE_KEY + c for c in cams} | {STATE_KEY} | ({ENV_KEY} if privileged else set())
    missing = sorted(needed - set(msg))
    if missing:
        raise WireError(f"missing observation keys {missing}")
    images = {}
    for name, cam in cams.items():
        img = _array(msg, IMAGE_KEY + name, np.uint8, 3)
        w, h = cam.resolution
        if img.shape != (h, w, 3):
            raise WireError(f"{IMAGE_KEY + name}: expected [{h}, {w}, 3], got {list(img.shape)}")
        images[name] = img
    state = _array(msg, STATE_KEY, np.float32, 1)
    prompt = msg.get(PROMPT_KEY, spec.task.instruction)
    if not isinstance(prompt, str):
        raise WireError(f"{PROMPT_KEY}: expected a string, got {type(prompt).__name__}")
    env = _array(msg, ENV_KEY, np.float32, 1) if privileged else None
    return Observation(images=images, state=state, task=prompt, environment_state=env)


# ------------------------------------------------------------------------------------------ server
class PolicyServer:
    """Serves policy `policy` (a registered name, checkpoint or policy YAML) for scene `spec`.

    One policy instance per connection (built with `seed`, or the seed a client's reset names), so a
    stateful policy's episodes do not mix. `start()` serves from a background thread (tests, notebooks);
    `serve_forever()` blocks (the CLI). `api_key`: requests without `Authorization: Api-Key <key>` get 401.
    """

    def __init__(
        self,
        policy: str,
        spec: SceneSpec,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        seed: int = 0,
    ) -> None:
        from policy_eval.policies import policy_info
        from scenes.twin import ACTION_DIM

        self.name, self.spec, self.seed = policy, spec, seed
        self.info = policy_info(policy)  # fails now, not at the first connection, for an unknown policy
        self.api_key, self.max_message_bytes = api_key, max_message_bytes
        self.metadata = {
            "policy": policy,
            "privileged": self.info.privileged,
            "scene": spec.name,
            "task": spec.task.instruction,
            "cameras": {c.name: [c.resolution[1], c.resolution[0], 3] for c in spec.cameras},
            "action_dim": ACTION_DIM,
            "dreamtwin": {"protocol": PROTOCOL, "scene_hash": spec.hash()},
        }
        self.stats = {"connections": 0, "requests": 0, "errors": 0}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._live: set[Any] = set()  # open connections, closed with the server
        from websockets.sync.server import serve

        try:
            self._server = serve(
                self._handle,
                host,
                port,
                process_request=self._process_request,
                max_size=max_message_bytes,
                compression=None,
            )
        except OSError as e:
            raise DreamTwinError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
        self.host, self.port = self._server.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _handle(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        from policy_eval.policies import make_policy

        self._count("connections")
        with self._lock:
            self._live.add(conn)
        peer = conn.remote_address
        policy: Policy | None = None
        policy_seed: int | None = None
        prev_total: float | None = None
        try:
            conn.send(packb(self.metadata))
            while True:
                raw = conn.recv()
                t0 = time.perf_counter()
                if isinstance(raw, str):
                    raise WireError("expected a binary msgpack frame, got a text frame")
                msg = unpackb(raw, self.max_message_bytes)
                if isinstance(msg, dict) and RESET_KEY in msg:
                    seed, pseed = _reset_request(msg)
                    if policy is None or pseed != policy_seed:
                        policy, policy_seed = make_policy(self.name, self.spec, pseed), pseed
                    policy.reset(seed)
                    conn.send(packb({"reset": True}))
                    continue
                obs = observation_from_wire(msg, self.spec, privileged=self.info.privileged)
                if policy is None:
                    policy, policy_seed = make_policy(self.name, self.spec, self.seed), self.seed
                    policy.reset(None)
                t1 = time.perf_counter()
                actions = np.asarray(policy.act(obs), np.float32)
                infer_ms = 1000 * (time.perf_counter() - t1)
                if actions.ndim == 1:
                    actions = actions[None]
                reply: dict[str, Any] = {
                    "actions": actions,
                    "policy_timing": {"infer_ms": infer_ms},
                    "server_timing": {"infer_ms": 1000 * (time.perf_counter() - t0)},
                }
                if prev_total is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total
                conn.send(packb(reply))
                self._count("requests")
                prev_total = 1000 * (time.perf_counter() - t0)
        except ConnectionClosed:
            return
        except Exception as e:  # a bad request or a failing policy ends this connection, never the server
            self._count("errors")
            text = str(e) if isinstance(e, DreamTwinError) else traceback.format_exc()
            log.warning("policy server: closing the connection from %s: %s", peer, str(e) or type(e).__name__)
            try:
                conn.send(text)
                conn.close(code=1011, reason="policy server error"[:120])
            except ConnectionClosed:
                pass
        finally:
            with self._lock:
                self._live.discard(conn)

    def start(self) -> PolicyServer:
        """Serve from a daemon thread; returns self (its `url` names the bound port)."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="policy-server")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        """Stop accepting, then close every open connection (going away, 1001): no client keeps talking
        to a closed server."""
        self._server.shutdown()
        with self._lock:
            live = list(self._live)
        for conn in live:
            conn.close(code=1001, reason="policy server shutting down")
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reset_request(msg: dict[str, Any]) -> tuple[int | None, int]:
    r = msg[RESET_KEY]
    if set(msg) != {RESET_KEY} or not isinstance(r, dict) or set(r) - {"seed", "policy_seed"}:
        raise WireError(
            f"a reset is {{{RESET_KEY!r}: {{'seed': int | None, 'policy_seed': int}}}}, got {msg!r}"
        )
    seed, pseed = r.get("seed"), r.get("policy_seed", 0)
    for k, v in (("seed", seed), ("policy_seed", pseed)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63):
            raise WireError(f"reset {k} must be a non-negative integer, got {v!r}")
    if pseed is None:
        raise WireError("reset policy_seed must be a non-negative integer, got None")
    return seed, pseed


# ------------------------------------------------------------------------------------------ client
_SOURCE = re.compile(r"^(images\.[A-Za-z0-9_]+|state(\[\d*:\d*\])?|environment_state|task)$")


class RemoteConfig(Strict):
    """A policy served over the network (`type: remote` YAML wherever a policy name goes)."""

    type: Literal["remote"] = "remote"
    url: str = Field(description="ws://host:port or wss://host:port of an openpi-compatible policy server")
    api_key_env: str | None = Field(None, description="environment variable holding the server's API key")
    keys: dict[str, str] | None = Field(
        None,
        description=(
            "server key -> what to send: images.<camera>, state, state[a:b], environment_state, task "
            "(default: our own keys, observation/images/<camera>, observation/state, prompt)"
        ),
    )
    image_size: tuple[int, int] | None = Field(
        None, description="[height, width] every image is resized to, keeping its aspect ratio (padded)"
    )
    action_horizon: int | None = Field(None, ge=1, description="execute this many actions of each chunk")
    privileged: bool = Field(False, description="send simulator state (policies that read object poses)")
    connect_timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, description="reconnections tried before a request fails")
    backoff_s: float = Field(0.5, ge=0, description="first wait before reconnecting; doubles each time")
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^wss?://[^\s/]+(:\d+)?(/\S*)?$", v):
            raise ValueError(f"expected ws://host:port or wss://host:port, got {v!r}")
        return v

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for k, src in (v or {}).items():
            if not _SOURCE.match(src):
                raise ValueError(
                    f"{k}: {src!r} is not one of images.<camera>, state, state[a:b], environment_state, task"
                )
        return v


def is_remote(name: str) -> bool:
    return name.startswith("remote:")


def remote_config(name: str) -> RemoteConfig:
    """`remote:ws://...` (our keys) or a `type: remote` YAML file as a `RemoteConfig`."""
    if is_remote(name):
        from pydantic import ValidationError

        try:
            return RemoteConfig(url=name.removeprefix("remote:"))
        except ValidationError as e:
            raise SpecError(f"policy {name!r}: {e.errors()[0]['msg']}") from None
    return load_model(RemoteConfig, Path(name))


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` scaled to fit [height, width] keeping its aspect ratio, centred on black (bilinear)."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((height, width, image.shape[2]), image.dtype)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top : top + nh, left : left + nw] = scaled
    return out


class RemotePolicy:
    """The `Policy` protocol over an openpi-compatible websocket server (see the module docstring)."""

    def __init__(self, cfg: RemoteConfig, spec: SceneSpec, seed: int = 0) -> None:
        self.cfg, self.spec, self.seed = cfg, spec, seed
        self.privileged = cfg.privileged
        self.api_key: str | None = None
        if cfg.api_key_env is not None:
            self.api_key = os.environ.get(cfg.api_key_env)
            if not self.api_key:
                raise SpecError(f"api_key_env: environment variable {cfg.api_key_env} is not set")
        self.keys = cfg.keys or {
            **{IMAGE_KEY + c.name: f"images.{c.name}" for c in spec.cameras},
            STATE_KEY: "state",
            PROMPT_KEY: "task",
            **({ENV_KEY: "environment_state"} if cfg.privileged else {}),
        }
        self._ws: Any = None
        self.metadata: dict[str, Any] = {}
        self.reconnects = 0
        self.latency_ms: list[float] = []  # round trip of every request this episode
        self._reset_seed: int | None = None

    # -- connection
    @property
    def ours(self) -> bool:
        d = self.metadata.get("dreamtwin")
        return isinstance(d, dict) and d.get("protocol") == PROTOCOL

    def _connect(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        try:
            ws = connect(
                self.cfg.url,
                open_timeout=self.cfg.connect_timeout_s,
                max_size=self.cfg.max_message_bytes,
                compression=None,
                additional_headers=headers,
            )
        except TimeoutError:
            raise RemotePolicyError(
                f"policy server {self.cfg.url}: no connection within {self.cfg.connect_timeout_s} s"
            ) from None
        except InvalidStatus as e:  # the server answered and said no: retrying will not change that
            raise RemotePolicyError(
                f"policy server {self.cfg.url} refused the connection: {_reason(e)}"
                + (" (missing or wrong API key)" if e.response.status_code == 401 else "")
            ) from None
        except Exception as e:
            raise _Retryable(f"policy server {self.cfg.url}: cannot connect ({_reason(e)})") from None
        try:
            first = ws.recv(timeout=self.cfg.connect_timeout_s)
            if isinstance(first, str):
                raise WireError(f"a text frame instead of metadata: {_last_line(first)}")
            meta = unpackb(first, self.cfg.max_message_bytes)
        except Exception as e:
            ws.close()
            raise _Retryable(
                f"policy server {self.cfg.url}: no metadata after connecting ({_reason(e)})"
            ) from None
        if not isinstance(meta, dict):
            ws.close()
            raise RemotePolicyError(f"policy server {self.cfg.url}: metadata is not a map")
        self._ws, self.metadata = ws, meta
        if self.ours and meta.get("scene") != self.spec.name:
            self.close()
            raise RemotePolicyError(
                f"policy server {self.cfg.url} serves {meta.get('policy')!r} for scene {meta.get('scene')!r}, "
                f"this job's scene is {self.spec.name!r}"
            )

    def _exchange(self, payload: bytes) -> Any:
        """Send one request and return its decoded reply, reconnecting with backoff on a dropped link."""
        from websockets.exceptions import ConnectionClosed

        wait = self.cfg.backoff_s
        last = ""
        for attempt in range(self.cfg.retries + 1):
            try:
                if self._ws is None:
                    self._connect()
                    if attempt > 0 and self.ours and self._reset_seed is not None:
                        self._send_reset()  # a fresh server-side policy: restart it on the episode's seed
                self._ws.send(payload)
                reply = self._ws.recv(timeout=self.cfg.request_timeout_s)
            except TimeoutError:
                self.close()
                raise RemotePolicyError(
                    f"policy server {self.cfg.url}: no reply within {self.cfg.request_timeout_s} s"
                ) from None
            except (_Retryable, ConnectionClosed, OSError) as e:
                err = self._ws_error(e)
                self.close()
                if err is not None:
                    raise RemotePolicyError(err) from None
                last = _reason(e)
                if attempt < self.cfg.retries:
                    self.reconnects += 1
                    time.sleep(wait)
                    wait *= 2
                continue
            if isinstance(reply, str):
                self.close()
                raise RemotePolicyError(f"policy server {self.cfg.url} failed: {_last_line(reply)}")
            try:
                return unpackb(reply, self.cfg.max_message_bytes)
            except WireError as e:
                self.close()
                raise RemotePolicyError(f"policy server {self.cfg.url}: malformed reply: {e}") from None
        raise RemotePolicyError(
            f"policy server {self.cfg.url} is gone ({last}; {self.cfg.retries} reconnections tried)"
        )

    def _ws_error(self, e: BaseException) -> str | None:
        """A close the server meant (an error it reported, a refused message size): not worth retrying."""
        from websockets.exceptions import ConnectionClosed

        if not isinstance(e, ConnectionClosed) or e.rcvd is None:
            return None
        code, reason = e.rcvd.code, e.rcvd.reason
        if code == 1009:
            return (
                f"policy server {self.cfg.url} refused a message over its size limit ({reason or 'too big'})"
            )
        if code == 1011:
            return f"policy server {self.cfg.url} failed: {reason or 'internal error'}"
        return None

    def _send_reset(self) -> None:
        msg = {RESET_KEY: {"seed": self._reset_seed, "policy_seed": self.seed}}
        self._ws.send(packb(msg))
        reply = self._ws.recv(timeout=self.cfg.request_timeout_s)
        if isinstance(reply, str):
            raise RemotePolicyError(f"policy server {self.cfg.url} refused a reset: {_last_line(reply)}")

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # closing a dead link
                pass
            self._ws = None

    def __del__(self) -> None:
        if getattr(self, "_ws", None) is not None:
            self.close()

    # -- the Policy protocol
    def reset(self, seed: int | None = None) -> None:
        self._reset_seed = seed
        self.latency_ms = []
        if self._ws is None:
            self._exchange_connect()
        if self.ours:
            reply = self._exchange(packb({RESET_KEY: {"seed": seed, "policy_seed": self.seed}}))
            if not (isinstance(reply, dict) and reply.get("reset") is True):
                raise RemotePolicyError(f"policy server {self.cfg.url}: unexpected reply to a reset")

    def _exchange_connect(self) -> None:
        wait, last = self.cfg.backoff_s, ""
        for attempt in range(self.cfg.retries + 1):
            try:
                self._connect()
                return
            except _Retryable as e:
                last = str(e)
                if attempt < self.cfg.retries:
                    time.sleep(wait)
                    wait *= 2
        raise RemotePolicyError(f"{last} ({self.cfg.retries} retries)")

    def wire_observation(self, obs: Observation) -> dict[str, Any]:
        """What `act` sends for `obs`: the configured keys, images resized when asked."""
        out: dict[str, Any] = {}
        for key, src in self.keys.items():
            if src == "task":
                out[key] = obs.task
            elif src == "environment_state":
                if obs.environment_state is None:
                    raise RemotePolicyError(f"{key}: the observation carries no simulator state")
                out[key] = np.asarray(obs.environment_state, np.float32)
            elif src.startswith("state"):
                state = np.asarray(obs.state, np.float32)
                if "[" in src:
                    a, b = src[6:-1].split(":")
                    state = state[int(a) if a else None : int(b) if b else None]
                out[key] = state
            else:
                cam = src.removeprefix("images.")
                if cam not in obs.images:
                    raise RemotePolicyError(
                        f"{key}: no image from camera {cam!r} (have {sorted(obs.images)})"
                    )
                img = np.ascontiguousarray(obs.images[cam])
                if self.cfg.image_size is not None:
                    img = resize_with_pad(img, *self.cfg.image_size)
                out[key] = img
        return out

    def act(self, observation: Observation) -> np.ndarray:
        if self._ws is None and not self.metadata:
            self.reset(None)
        t0 = time.perf_counter()
        reply = self._exchange(packb(self.wire_observation(observation)))
        self.latency_ms.append(1000 * (time.perf_counter() - t0))
        actions = reply.get("actions") if isinstance(reply, dict) else None
        if not isinstance(actions, np.ndarray) or actions.dtype.kind != "f" or actions.ndim not in (1, 2):
            got = (
                f"{actions.dtype} {list(actions.shape)}"
                if isinstance(actions, np.ndarray)
                else type(actions).__name__
            )
            raise RemotePolicyError(
                f"policy server {self.cfg.url}: reply 'actions' must be a float array [horizon, dim], got {got}"
            )
        actions = np.asarray(actions, np.float32).reshape(-1, actions.shape[-1])
        if self.cfg.action_horizon is not None:
            actions = actions[: self.cfg.action_horizon]
        return actions


class _Retryable(Exception):
    """A connection attempt that may succeed if tried again."""


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(empty error)"


def make_remote_policy(name: str, spec: SceneSpec, seed: int = 0) -> RemotePolicy:
    return RemotePolicy(remote_config(name), spec, seed)
