"""LeRobot v3.0 datasets: write (assemble staged episodes), read, verify.

Matches the layout written by LeRobot 0.6.1 (codebase_version "v3.0"):

    meta/info.json                       fps, features, totals, chunk/file settings, path templates
    meta/stats.json                      per feature min/max/mean/std/count/q01..q99 (images per channel)
    meta/tasks.parquet                   task_index, indexed by the task string (index name "task")
    meta/episodes/chunk-000/file-000.parquet   one row per episode: lengths, data/video locations, stats/*
    data/chunk-000/file-000.parquet      one row per frame, many episodes per file, one row group each
    videos/<camera key>/chunk-000/file-000.mp4 many episodes per file, at [from_timestamp, to_timestamp)
    meta/dreamtwin.json                  ours: on-disk version, the job that made it, per-episode seeds

Differences from LeRobot that readers do not see: quantiles are exact per episode (LeRobot
estimates them from histograms) and image statistics use every frame of short episodes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import DreamTwinError
from common.io import read_json
from common.video import VideoError, VideoSettings, concat_videos, decode_frames, video_info

if TYPE_CHECKING:
    import pyarrow as pa

    from datagen.rollouts import ResolvedJob
    from scenes.spec import SceneSpec

CODEBASE_VERSION = "v3.0"
DREAMTWIN_FORMAT_VERSION = 1
LEROBOT_REFERENCE = "lerobot 0.6.1 (codebase_version v3.0)"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STAT_KEYS = ("min", "max", "mean", "std", "count") + tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
IMAGE_STAT_SAMPLES = 100


class DatasetError(DreamTwinError):
    """A dataset directory that is missing, of another version, or corrupted (names the file)."""


# ---------------------------------------------------------------------- statistics
def _stats(x: np.ndarray, axis: tuple[int, ...]) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    out = {
        "min": x.min(axis=axis),
        "max": x.max(axis=axis),
        "mean": x.mean(axis=axis),
        "std": x.std(axis=axis),
    }
    for q, k in zip(QUANTILES, STAT_KEYS[5:], strict=True):
        out[k] = np.quantile(x, q, axis=axis)
    return out


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """Stats of a numeric [T, ...] feature over frames (LeRobot's layout, lists)."""
    v = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
    s = _stats(v, (0,))
    return {**{k: a.tolist() for k, a in s.items()}, "count": [len(values)]}


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel stats (shape [3, 1, 1], in [0, 1]) of uint8 [T, H, W, 3] frames, on up to
    IMAGE_STAT_SAMPLES evenly spaced frames; `count` is the number of frames used."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STAT_SAMPLES)).round().astype(int))
    x = frames[idx].astype(np.float64) / 255.0
    s = _stats(x, (0, 1, 2))
    return {**{k: a.reshape(3, 1, 1).tolist() for k, a in s.items()}, "count": [len(idx)]}


def episode_stats(arrays: dict[str, np.ndarray], frames: dict[str, np.ndarray]) -> dict[str, dict[str, list]]:
    """Stats of one episode's numeric features and camera frames (camera name -> frames)."""
    out = {k: feature_stats(np.asarray(v)) for k, v in arrays.items()}
    T = len(next(iter(arrays.values())))
    out["timestamp"] = feature_stats(np.asarray(arrays.get("timestamp", np.zeros(T))))
    out["frame_index"] = feature_stats(np.arange(T))
    for cam, fr in frames.items():
        out[f"observation.images.{cam}"] = image_stats(fr)
    return out


def aggregate_stats(per_episode: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """LeRobot's aggregation: min/max elementwise, count-weighted mean and quantiles, pooled std."""
    keys = list(per_episode[0])
    out: dict[str, dict[str, list]] = {}
    for k in keys:
        eps = [e[k] for e in per_episode]
        cnt = np.array([e["count"][0] for e in eps], dtype=np.float64)
        w = (cnt / cnt.sum()).reshape((-1,) + (1,) * np.asarray(eps[0]["mean"]).ndim)
        means = np.stack([np.asarray(e["mean"], np.float64) for e in eps])
        mean = (w * means).sum(0)
        var = (
            w * (np.stack([np.asarray(e["std"], np.float64) for e in eps]) ** 2 + (means - mean) ** 2)
        ).sum(0)
        agg = {
            "min": np.min(np.stack([np.asarray(e["min"], np.float64) for e in eps]), 0),
            "max": np.max(np.stack([np.asarray(e["max"], np.float64) for e in eps]), 0),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
        }
        for q in STAT_KEYS[5:]:
            agg[q] = (w * np.stack([np.asarray(e[q], np.float64) for e in eps])).sum(0)
        out[k] = {**{s: a.tolist() for s, a in agg.items()}, "count": [int(cnt.sum())]}
    return out


# ---------------------------------------------------------------------- schema
def dataset_features(
    spec: SceneSpec, randomization_names: list[str], fps: float
) -> dict[str, dict[str, Any]]:
    """The info.json `features` of a rollout dataset of scene `spec` (video `info` filled later)."""
    from scenes.twin import ACTION_NAMES, STATE_NAMES

    env_names = [f"{o.name}.{k}" for o in spec.objects for k in ("x", "y", "z", "qw", "qx", "qy", "qz")]
    feats: dict[str, dict[str, Any]] = {}
    for c in spec.cameras:
        w, h = c.resolution
        feats[f"observation.images.{c.name}"] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
        }
    feats["observation.state"] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": list(STATE_NAMES)}
    feats["observation.environment_state"] = {
        "dtype": "float32",
        "shape": [len(env_names)],
        "names": env_names,
    }
    feats["action"] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)}
    feats["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    feats["randomization"] = {
        "dtype": "float32",
        "shape": [len(randomization_names)],
        "names": randomization_names,
    }
    feats["seed"] = {"dtype": "int64", "shape": [1], "names": None}
    feats["policy"] = {"dtype": "string", "shape": [1], "names": None}
    feats["scene_hash"] = {"dtype": "string", "shape": [1], "names": None}
    return {**feats, **DEFAULT_FEATURES}


def _arrow_type(feat: dict[str, Any]) -> Any:
    import pyarrow as pa

    base = {
        "float32": pa.float32(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "string": pa.string(),
    }[feat["dtype"]]
    # LeRobot's files (written through HF datasets) name the list element "element"
    return base if feat["shape"] == [1] else pa.list_(pa.field("element", base), feat["shape"][0])


def _hf_feature(feat: dict[str, Any]) -> dict[str, Any]:
    value = {"dtype": feat["dtype"], "_type": "Value"}
    return value if feat["shape"] == [1] else {"feature": value, "length": feat["shape"][0], "_type": "List"}


def data_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    """Arrow schema of the data files: every non-video feature, in info.json order, with the
    `huggingface` metadata that lets `datasets` rebuild the feature types."""
    import pyarrow as pa

    cols = {k: f for k, f in features.items() if f["dtype"] != "video"}
    hf = {"info": {"features": {k: _hf_feature(f) for k, f in cols.items()}}}
    return pa.schema([(k, _arrow_type(f)) for k, f in cols.items()], metadata={"huggingface": json.dumps(hf)})


# ---------------------------------------------------------------------- writing
def _mb(path: Path) -> float:
    return path.stat().st_size / 1024**2


def _next(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def assemble_dataset(
    out: Path, private: Path, metas: list[dict[str, Any]], resolved: ResolvedJob
) -> dict[str, Any]:
    """Write the LeRobot files for the staged episodes `metas` (in dataset order) and move them into
    `out` (`meta/` last, so `meta/info.json` appears only with a complete dataset)."""
    spec = resolved.spec
    staging = private / "staging"
    build = private / "assembly"
    shutil.rmtree(build, ignore_errors=True)
    (build / "meta").mkdir(parents=True)
    features = dataset_features(spec, metas[0]["randomization_names"], spec.control.rate_hz)
    tasks = list(dict.fromkeys(m["task"] for m in metas))
    rows, params = _write_data_files(
        build, staging, metas, data_schema(features), tasks, spec.control.rate_hz
    )
    for cam in (c.name for c in spec.cameras):
        key = f"observation.images.{cam}"
        _write_camera_videos(
            build, [staging / f"ep-{m['attempt']:06d}" / f"{cam}.mp4" for m in metas], key, rows
        )
        features[key]["info"] = _video_feature_info(
            build / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), resolved.job.video
        )
    ep_stats = _add_episode_stats(rows, metas, features, tasks)
    _write_meta(build, rows, tasks, features, aggregate_stats(ep_stats), spec)
    job = json.loads((private / "job.json").read_text())
    _write_dreamtwin_meta(build / "meta" / "dreamtwin.json", job, spec, metas, params)
    _swap_in(build, out)
    return {
        "data_files": len(list((out / "data").rglob("*.parquet"))),
        "video_files": len(list((out / "videos").rglob("*.mp4"))) if spec.cameras else 0,
    }


def _write_data_files(
    build: Path, staging: Path, metas: list[dict[str, Any]], schema: Any, tasks: list[str], fps: float
) -> tuple[list[dict[str, Any]], list[list[float]]]:
    """The data parquet files: episodes appended to a file until the next would pass the size limit.
    Returns each episode's metadata row (lengths, data location) and its randomisation parameters."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    params: list[list[float]] = []  # per episode, read once here for meta/dreamtwin.json
    chunk = file = 0
    writer: Any = None
    frames_in_file = 0
    index = 0
    for k, m in enumerate(metas):
        with np.load(staging / f"ep-{m['attempt']:06d}" / "arrays.npz", allow_pickle=False) as z:
            arr = {n: z[n] for n in z.files}
        T = len(arr["action"])
        params.append(arr["randomization"][0].astype(float).tolist())
        path = build / DATA_PATH.format(chunk_index=chunk, file_index=file)
        if writer is not None and frames_in_file:
            if _mb(path) + _mb(path) / frames_in_file * T >= DATA_FILES_SIZE_IN_MB:
                writer.close()
                writer, frames_in_file = None, 0
                chunk, file = _next(chunk, file)
                path = build / DATA_PATH.format(chunk_index=chunk, file_index=file)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, schema=schema, compression="snappy", use_dictionary=True)
        writer.write_table(_episode_table(arr, m, k, index, tasks.index(m["task"]), schema, fps))
        frames_in_file += T
        rows.append(
            {
                "episode_index": k,
                "tasks": [m["task"]],
                "length": T,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": index,
                "dataset_to_index": index + T,
            }
        )
        index += T
    if writer is not None:
        writer.close()
    return rows, params


def _episode_table(
    arr: dict[str, np.ndarray],
    m: dict[str, Any],
    k: int,
    index: int,
    task_index: int,
    schema: Any,
    fps: float,
) -> Any:
    """Episode k's frames as an Arrow table of `schema`; its first frame has global index `index`."""
    import pyarrow as pa

    T = len(arr["action"])
    cols = {
        "observation.state": arr["observation.state"],
        "observation.environment_state": arr["observation.environment_state"],
        "action": arr["action"],
        "next.success": arr["next.success"],
        "next.done": arr["next.done"],
        "randomization": arr["randomization"],
        "seed": np.full(T, m["seed"], np.int64),
        "policy": [m["policy"]] * T,
        "scene_hash": [m["scene_hash"]] * T,
        "timestamp": (np.arange(T) / fps).astype(np.float32),
        "frame_index": np.arange(T, dtype=np.int64),
        "episode_index": np.full(T, k, np.int64),
        "index": np.arange(index, index + T, dtype=np.int64),
        "task_index": np.full(T, task_index, np.int64),
    }
    arrays = []
    for name, f in zip(schema.names, schema, strict=True):
        v = cols[name]
        if pa.types.is_fixed_size_list(f.type):
            arrays.append(
                pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(v).reshape(-1)), f.type.list_size)
            )
        else:
            arrays.append(pa.array(v, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_camera_videos(
    build: Path, episode_videos: list[Path], key: str, rows: list[dict[str, Any]]
) -> None:
    """One camera's video files: the episodes' MP4s joined by stream copy until the size limit;
    each episode's row gets its file and time span."""
    groups: list[list[int]] = [[]]
    size = 0.0
    for k, video in enumerate(episode_videos):
        s = _mb(video)
        if groups[-1] and size + s >= VIDEO_FILES_SIZE_IN_MB:
            groups.append([])
            size = 0.0
        groups[-1].append(k)
        size += s
    chunk = file = 0
    for g in groups:
        path = build / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        spans = concat_videos([episode_videos[k] for k in g], path)
        for k, (t0, t1) in zip(g, spans, strict=True):
            rows[k].update(
                {
                    f"videos/{key}/chunk_index": chunk,
                    f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": t0,
                    f"videos/{key}/to_timestamp": t1,
                }
            )
        chunk, file = _next(chunk, file)


def _video_feature_info(first_file: Path, video: VideoSettings) -> dict[str, Any]:
    """The info.json `info` of a video feature: stream properties and the encoder settings."""
    return {
        **video_info(first_file),
        "video.g": video.g,
        "video.crf": video.crf,
        "video.preset": video.preset,
        "video.fast_decode": 0,
        "video.video_backend": "pyav",
        "video.extra_options": {},
        "is_depth_map": False,
    }


def _add_episode_stats(
    rows: list[dict[str, Any]], metas: list[dict[str, Any]], features: dict[str, Any], tasks: list[str]
) -> list[dict[str, dict[str, list]]]:
    """Each episode's stats (staged ones + the index columns) as `stats/<feature>/<stat>` columns of
    its row; returns the stats for aggregation."""
    ep_stats = []
    for k, m in enumerate(metas):
        s = dict(m["stats"])
        T = rows[k]["length"]
        s["episode_index"] = feature_stats(np.full(T, k))
        s["index"] = feature_stats(np.arange(rows[k]["dataset_from_index"], rows[k]["dataset_to_index"]))
        s["task_index"] = feature_stats(np.full(T, tasks.index(m["task"])))
        s["seed"] = feature_stats(np.full(T, m["seed"]))
        s = {f: s[f] for f in features if f in s}
        ep_stats.append(s)
        for f, fs in s.items():
            for stat in STAT_KEYS:
                rows[k][f"stats/{f}/{stat}"] = fs[stat]
        rows[k]["meta/episodes/chunk_index"] = 0
        rows[k]["meta/episodes/file_index"] = 0
    return ep_stats


def _write_meta(
    build: Path,
    rows: list[dict[str, Any]],
    tasks: list[str],
    features: dict[str, Any],
    stats: dict[str, dict[str, list]],
    spec: SceneSpec,
) -> None:
    """meta/: the episodes parquet, tasks.parquet, stats.json and info.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ep_path = build / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), ep_path, compression="snappy", use_dictionary=True)
    _write_tasks(build / "meta" / "tasks.parquet", tasks)
    (build / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "fps": int(round(spec.control.rate_hz)),
        "features": features,
        "total_episodes": len(rows),
        "total_frames": rows[-1]["dataset_to_index"],
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "robot_type": spec.robot.type,
        "splits": {"train": f"0:{len(rows)}"},
    }
    (build / "meta" / "info.json").write_text(json.dumps(info, indent=4, ensure_ascii=False))


def _write_dreamtwin_meta(
    path: Path, job: dict[str, Any], spec: SceneSpec, metas: list[dict[str, Any]], params: list[list[float]]
) -> None:
    """meta/dreamtwin.json: our format version, the job that made the dataset, each episode's origin."""
    episodes = [
        {
            "episode_index": k,
            "attempt": m["attempt"],
            "seed": m["seed"],
            "policy": m["policy"],
            "success": m["success"],
            "randomization": dict(zip(m["randomization_names"], params[k], strict=True)),
            **{
                key: m[key]
                for key in (
                    "stopped",
                    "interventions",
                    "policy_latency_ms",
                    "success_known",
                    "trust",
                    "trusted",
                )
                if key in m
            },
        }
        for k, m in enumerate(metas)
    ]
    doc = {
        "format_version": DREAMTWIN_FORMAT_VERSION,
        "lerobot_reference": LEROBOT_REFERENCE,
        "fingerprint": job["fingerprint"],
        "job": job["job"],
        # episodes imagined by a learned world (not simulated by the twin) are synthetic
        "synthetic": job["job"].get("world", "twin") != "twin" or job["job"].get("synth") is not None,
        "world": job["job"].get("world", "twin"),
        # sampled by a trajectory diffusion model (`datagen synth`): the generator and its guidance
        "generator": job["job"].get("synth"),
        # recorded through a robot (`dreamtwin record`): the robot's settings, the outcome judged by it
        "robot": job["job"].get("robot"),
        "scene": spec.model_dump(mode="json"),
        "episodes": episodes,
    }
    path.write_text(json.dumps(doc, indent=2))


def _write_tasks(path: Path, tasks: list[str]) -> None:
    import pandas as pd

    df = pd.DataFrame(
        {"task_index": np.arange(len(tasks), dtype=np.int64)}, index=pd.Index(tasks, name="task")
    )
    df.to_parquet(path)


def _swap_in(build: Path, out: Path) -> None:
    info = out / "meta" / "info.json"
    if info.exists():
        info.unlink()  # from here until meta/ moves in, the directory reads as incomplete
    for sub in ("data", "videos", "meta"):
        shutil.rmtree(out / sub, ignore_errors=True)
        if (build / sub).exists():
            os.rename(build / sub, out / sub)
    shutil.rmtree(build, ignore_errors=True)


# ---------------------------------------------------------------------- reading
def read_info(root: str | Path) -> dict[str, Any]:
    """meta/info.json of a v3.0 dataset, checked; plus our own format version where present."""
    root = Path(root)
    path = root / "meta" / "info.json"
    info = read_json(path, DatasetError, "not found (not a LeRobot dataset, or an unfinished one)")
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetError(
            f"{path}: codebase_version {info.get('codebase_version')!r}, expected {CODEBASE_VERSION!r}"
        )
    missing = [k for k in ("fps", "features", "total_episodes", "total_frames", "data_path") if k not in info]
    if missing:
        raise DatasetError(f"{path}: missing keys {missing}")
    ours = root / "meta" / "dreamtwin.json"
    if ours.exists():
        v = json.loads(ours.read_text()).get("format_version")
        if v != DREAMTWIN_FORMAT_VERSION:
            raise DatasetError(f"{ours}: format_version {v}, this DreamTwin reads {DREAMTWIN_FORMAT_VERSION}")
    return info


def _read_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: corrupted parquet ({str(e).splitlines()[0]})") from None


class LeRobotDataset:
    """Read access to a LeRobot v3.0 dataset directory.

    ds = LeRobotDataset("data/push")
    ds.num_episodes, ds.camera_keys, ds.fps
    ep = ds.episode(3)              # numeric columns of episode 3 (numpy)
    frames = ds.frames(3, "observation.images.side")   # uint8 [T, H, W, 3], by seeking
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.info = read_info(self.root)
        self.fps = float(self.info["fps"])
        self.features = self.info["features"]
        self.camera_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise DatasetError(f"{self.root / 'meta' / 'episodes'}: no episode metadata files")
        import pyarrow as pa

        self.episodes = pa.concat_tables([_read_parquet(p) for p in ep_files]).to_pylist()
        self.episodes.sort(key=lambda r: r["episode_index"])
        self._data_cache: dict[tuple[int, int], Any] = {}

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def _data_file(self, chunk: int, file: int) -> Any:
        key = (chunk, file)
        if key not in self._data_cache:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            self._data_cache[key] = _read_parquet(path)
        return self._data_cache[key]

    def episode(self, k: int) -> dict[str, np.ndarray]:
        """Numeric (and string) columns of episode k, each [T, ...]."""
        ep = self.episodes[k]
        table = self._data_file(ep["data/chunk_index"], ep["data/file_index"])
        first = table.column("index").to_numpy()
        lo = int(np.searchsorted(first, ep["dataset_from_index"]))
        part = table.slice(lo, ep["length"])
        import pyarrow as pa

        out: dict[str, np.ndarray] = {}
        for name in part.column_names:
            col = part.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
                out[name] = np.asarray(col.flatten().to_numpy(zero_copy_only=False)).reshape(len(part), -1)
            else:
                out[name] = np.asarray(col.to_numpy(zero_copy_only=False))
        return out

    def video_path(self, k: int, key: str) -> Path:
        ep = self.episodes[k]
        return self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=ep[f"videos/{key}/chunk_index"],
            file_index=ep[f"videos/{key}/file_index"],
        )

    def frames(self, k: int, key: str, start: int = 0, n: int | None = None) -> np.ndarray:
        """uint8 [n, H, W, 3]: frames start..start+n of episode k from camera `key` (seeks, then decodes)."""
        ep = self.episodes[k]
        n = ep["length"] - start if n is None else n
        t0 = ep[f"videos/{key}/from_timestamp"] + start / self.fps
        return decode_frames(self.video_path(k, key), t0, n, self.fps)


def read_tasks(root: Path) -> list[str]:
    """Task strings by task_index (accepts the `task` index column or LeRobot 0.4's unnamed index)."""
    t = _read_parquet(root / "meta" / "tasks.parquet").to_pandas()
    order = np.argsort(t["task_index"].to_numpy())
    return [str(t.index[i]) for i in order]


# ---------------------------------------------------------------------- verification
def verify_dataset(root: str | Path, *, check_frames: bool = True) -> dict[str, Any]:
    """Check integrity; raises DatasetError naming the first broken file."""
    root = Path(root)
    ds = LeRobotDataset(root)
    info = ds.info
    tasks = read_tasks(root)
    if len(tasks) != info.get("total_tasks", len(tasks)):
        raise DatasetError(
            f"{root / 'meta/tasks.parquet'}: {len(tasks)} tasks, info.json says {info['total_tasks']}"
        )
    if ds.num_episodes != info["total_episodes"]:
        raise DatasetError(
            f"{root / 'meta/episodes'}: {ds.num_episodes} episodes, info.json says {info['total_episodes']}"
        )
    data_files = _verify_data_files(root, info)
    frames_total, video_files = 0, set()
    for k in range(ds.num_episodes):
        _verify_episode_rows(ds, k)
        if check_frames:
            video_files |= _verify_episode_frames(ds, k)
        frames_total += ds.episodes[k]["length"]
    _verify_aggregate_stats(ds)
    return {
        "episodes": ds.num_episodes,
        "frames": frames_total,
        "videos": len(video_files),
        "data_files": len(data_files),
    }


def _verify_data_files(root: Path, info: dict[str, Any]) -> list[Path]:
    """The data files hold info.json's frame count and feature columns; returns their paths."""
    data_files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    tables = {p: _read_parquet(p) for p in data_files}
    n_rows = sum(t.num_rows for t in tables.values())
    if n_rows != info["total_frames"]:
        raise DatasetError(
            f"{root / 'data'}: {n_rows} frames in the data files, info.json says {info['total_frames']}"
        )
    expected_cols = [k for k, f in info["features"].items() if f["dtype"] != "video"]
    for p, t in tables.items():
        if t.column_names != expected_cols:
            raise DatasetError(
                f"{p}: columns {t.column_names} differ from info.json features {expected_cols}"
            )
    return data_files


def _verify_episode_rows(ds: LeRobotDataset, k: int) -> None:
    """Episode k's rows match its metadata: indices, length, and the min/max/mean of float features."""
    root, info, ep = ds.root, ds.info, ds.episodes[k]
    if ep["episode_index"] != k:
        raise DatasetError(f"{root / 'meta/episodes'}: episode indices are not 0..{ds.num_episodes - 1}")
    cols = ds.episode(k)
    T = ep["length"]
    where = root / info["data_path"].format(
        chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
    )
    if (
        len(cols["index"]) != T
        or not np.array_equal(cols["frame_index"], np.arange(T))
        or np.any(cols["episode_index"] != k)
    ):
        raise DatasetError(f"{where}: rows of episode {k} do not match its metadata (length {T})")
    for f, spec in info["features"].items():
        if spec["dtype"] in ("float32", "float64") and f in cols:
            got = cols[f].reshape(T, -1).astype(np.float64)
            for stat, fn in (("min", np.min), ("max", np.max), ("mean", np.mean)):
                ref = np.asarray(ep[f"stats/{f}/{stat}"], np.float64)
                if not np.allclose(fn(got, axis=0), ref, rtol=1e-5, atol=1e-6):
                    raise DatasetError(
                        f"{root / 'meta/episodes'}: stats/{f}/{stat} of episode {k} disagree with {where}"
                    )


def _verify_episode_frames(ds: LeRobotDataset, k: int) -> set[Path]:
    """Every camera of episode k decodes to its length and the feature's shape; returns the files read."""
    info, T = ds.info, ds.episodes[k]["length"]
    paths = set()
    for key in ds.camera_keys:
        path = ds.video_path(k, key)
        paths.add(path)
        if not path.exists():
            raise DatasetError(f"{path}: missing")
        try:
            fr = ds.frames(k, key)
        except VideoError as e:
            raise DatasetError(str(e)) from None
        h, w, _ = info["features"][key]["shape"]
        if fr.shape != (T, h, w, 3):
            raise DatasetError(f"{path}: episode {k} decodes to {list(fr.shape)}, expected {[T, h, w, 3]}")
    return paths


def _verify_aggregate_stats(ds: LeRobotDataset) -> None:
    """meta/stats.json follows from the per-episode stats."""
    per_ep = [
        {
            f: {s: ep[f"stats/{f}/{s}"] for s in STAT_KEYS}
            for f in ds.info["features"]
            if f"stats/{f}/mean" in ep
        }
        for ep in ds.episodes
    ]
    stats_path = ds.root / "meta" / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{stats_path}: unreadable ({e})") from None
    for f, s in aggregate_stats(per_ep).items():
        for stat in ("min", "max", "mean", "std"):
            if f not in stats or not np.allclose(
                np.asarray(stats[f][stat], np.float64), np.asarray(s[stat]), rtol=1e-6, atol=1e-9
            ):
                raise DatasetError(f"{stats_path}: {f}.{stat} is inconsistent with the episodes' stats")


def dataset_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and ".dreamtwin" not in f.parts)
