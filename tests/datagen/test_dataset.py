"""LeRobot v3.0 datasets from twin rollouts: written, verified, read back against a replay of the twin."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.video import psnr
from datagen.lerobot import LeRobotDataset, aggregate_stats, feature_stats, read_tasks, verify_dataset
from tests.datagen.conftest import RANDOMIZE, job_dict


def replay(twin, spec, ds, k):
    """Re-run episode k in the twin from its seed and recorded actions: (frames, states, env states)."""
    from scenes.randomization import load_randomization, sample_variation

    cols = ds.episode(k)
    seed = int(cols["seed"][0])
    twin.set_variant(sample_variation(spec, load_randomization(RANDOMIZE), seed).spec)
    try:
        obs = [twin.reset(seed)]
        for a in cols["action"][:-1]:
            obs += twin.step(a[None]).observations
    finally:
        twin.set_variant(spec)
    cam = spec.cameras[0].name
    return (
        np.stack([o.images[cam] for o in obs]),
        np.stack([o.state for o in obs]),
        np.stack([o.environment_state for o in obs]),
        cols,
    )


@pytest.mark.sim
def test_dataset_verifies_and_frames_states_actions_match_the_twin(small_dataset, push_twin, push_spec):
    out, summary = small_dataset
    report = verify_dataset(out)
    assert report == {"episodes": 12, "frames": summary["frames"], "videos": 1, "data_files": 1}
    ds = LeRobotDataset(out)
    meta = json.loads((out / "meta/dreamtwin.json").read_text())
    assert {e["policy"] for e in meta["episodes"]} == {"expert", "image_mild"}
    assert [e["seed"] for e in meta["episodes"]] == list(range(12))
    key = "observation.images.side"
    for k in (0, 1, 2, 3):
        frames, states, env, cols = replay(push_twin, push_spec, ds, k)
        assert len(frames) == ds.episodes[k]["length"]
        np.testing.assert_array_equal(cols["observation.state"], states)  # exact
        np.testing.assert_array_equal(cols["observation.environment_state"], env)
        assert bool(cols["next.success"][-1]) == meta["episodes"][k]["success"]
        decoded = ds.frames(k, key)
        worst = min(psnr(a, b) for a, b in zip(frames, decoded, strict=True))
        assert worst >= 35.0, f"episode {k}: worst frame PSNR {worst:.1f} dB"
    # a frame in the middle of an episode, by seeking, equals the same frame of the full decode
    np.testing.assert_array_equal(ds.frames(5, key, start=7, n=3), ds.frames(5, key)[7:10])


@pytest.mark.sim
def test_lossless_option_stores_frames_exactly(tmp_path, push_twin, push_spec):
    from common.video import VideoSettings
    from datagen.rollouts import RolloutJob, generate

    job = RolloutJob.model_validate(
        job_dict(tmp_path / "ll", episodes=2, video=VideoSettings.lossless().model_dump())
    )
    try:
        generate(job, progress=False, twin=push_twin)
    finally:
        push_twin.set_variant(push_spec)
    ds = LeRobotDataset(tmp_path / "ll")
    for k in range(2):
        frames, _, _, _ = replay(push_twin, push_spec, ds, k)
        np.testing.assert_array_equal(ds.frames(k, "observation.images.side"), frames)


@pytest.mark.sim
def test_info_json_matches_lerobot_v3(small_dataset):
    out, _ = small_dataset
    info = json.loads((out / "meta/info.json").read_text())
    # key order and values as LeRobot 0.6.1 writes them
    assert list(info) == [
        "codebase_version",
        "fps",
        "features",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_files_size_in_mb",
        "video_files_size_in_mb",
        "data_path",
        "video_path",
        "robot_type",
        "splits",
    ]
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (
        1000,
        100,
        200,
    )
    assert info["splits"] == {"train": "0:12"} and info["total_episodes"] == 12 and info["total_tasks"] == 1
    feats = info["features"]
    assert list(feats)[-5:] == ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[k] == {"dtype": "int64", "shape": [1], "names": None}
    cam = feats["observation.images.side"]
    assert (
        cam["dtype"] == "video"
        and cam["shape"] == [128, 128, 3]
        and cam["names"] == ["height", "width", "channels"]
    )
    assert {
        k: cam["info"][k]
        for k in (
            "video.height",
            "video.width",
            "video.codec",
            "video.pix_fmt",
            "video.fps",
            "video.channels",
            "has_audio",
            "is_depth_map",
        )
    } == {
        "video.height": 128,
        "video.width": 128,
        "video.codec": "av1",
        "video.pix_fmt": "yuv420p",
        "video.fps": 10,
        "video.channels": 3,
        "has_audio": False,
        "is_depth_map": False,
    }
    assert feats["observation.state"]["shape"] == [11] and len(feats["observation.state"]["names"]) == 11
    assert feats["randomization"]["names"][0] == "cube.hue_deg"


@pytest.mark.sim
def test_data_file_schema_matches_lerobot_v3(small_dataset):
    out, _ = small_dataset
    feats = json.loads((out / "meta/info.json").read_text())["features"]
    data = pq.read_schema(out / "data/chunk-000/file-000.parquet")
    assert data.names == [k for k, f in feats.items() if f["dtype"] != "video"]
    assert str(data.field("observation.state").type) == "fixed_size_list<element: float>[11]"
    assert str(data.field("timestamp").type) == "float" and str(data.field("index").type) == "int64"
    assert b"huggingface" in data.metadata
    pf = pq.ParquetFile(out / "data/chunk-000/file-000.parquet")
    assert pf.metadata.num_row_groups == 12  # one row group per episode


@pytest.mark.sim
def test_episodes_metadata_matches_lerobot_v3(small_dataset):
    out, _ = small_dataset
    eps = pq.read_schema(out / "meta/episodes/chunk-000/file-000.parquet")
    k = "videos/observation.images.side"
    assert eps.names[:11] == [
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
        f"{k}/chunk_index",
        f"{k}/file_index",
        f"{k}/from_timestamp",
        f"{k}/to_timestamp",
    ]
    assert eps.names[-2:] == ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    stats_cols = [n for n in eps.names if n.startswith("stats/")]
    assert "stats/observation.images.side/q99" in stats_cols and "stats/action/count" in stats_cols
    assert (
        str(eps.field("tasks").type) == "list<element: string>"
        or str(eps.field("tasks").type) == "list<item: string>"
    )
    assert str(eps.field(f"{k}/from_timestamp").type) == "double"
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for a, b in zip(rows, rows[1:], strict=False):  # episodes sit back to back in the data and the video file
        assert b["dataset_from_index"] == a["dataset_to_index"]
        assert b[f"{k}/from_timestamp"] == pytest.approx(a[f"{k}/to_timestamp"], abs=1e-9)
        assert a[f"{k}/to_timestamp"] - a[f"{k}/from_timestamp"] == pytest.approx(a["length"] / 10, abs=1e-9)


@pytest.mark.sim
def test_tasks_and_stats_files_match_lerobot_v3(small_dataset):
    out, _ = small_dataset
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert set(tasks.column_names) == {"task_index", "task"}
    assert read_tasks(out) == ["push the red cube into the green square"]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.side"]["mean"]).shape == (3, 1, 1)
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_aggregated_stats_equal_stats_of_all_frames():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 17, 9)]
    agg = aggregate_stats([{"x": feature_stats(p)} for p in parts])["x"]
    whole = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(agg["mean"], whole.mean(0), rtol=1e-12)
    np.testing.assert_allclose(agg["std"], whole.std(0), rtol=1e-10)
    np.testing.assert_allclose(agg["min"], whole.min(0))
    np.testing.assert_allclose(agg["max"], whole.max(0))
    assert agg["count"] == [31]


@pytest.mark.sim
def test_window_dataset_slices_episodes(small_dataset):
    from datagen.windows import WindowDataset

    out, _ = small_dataset
    w = WindowDataset(out, context=3, future=2)
    ds = w.ds
    assert len(w) == sum(e["length"] - 5 + 1 for e in ds.episodes)
    item = w[len(w) // 2]
    k, t = item["episode_index"], item["frame_index"]
    cols = ds.episode(k)
    assert item["frames"].shape == (5, 1, 3, 128, 128)
    np.testing.assert_array_equal(
        item["frames"][:, 0].permute(0, 2, 3, 1).numpy(), ds.frames(k, "observation.images.side", t, 5)
    )
    np.testing.assert_array_equal(item["actions"].numpy(), cols["action"][t : t + 4])
    np.testing.assert_array_equal(item["state"].numpy(), cols["observation.state"][t : t + 5])
    # success marks frames after the action that solved the task
    last = w.index.index((k, ds.episodes[k]["length"] - 5))
    assert bool(w[last]["success"][-1]) == bool(cols["next.success"][-1])


@pytest.mark.sim
def test_verify_names_a_corrupted_parquet_or_truncated_video(small_dataset, tmp_path):
    from datagen.lerobot import DatasetError

    out, _ = small_dataset
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bad / "data/chunk-000/file-000.parquet"
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2] + b"\0" * 64 + raw[len(raw) // 2 + 64 :])
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000\.parquet") as e:
        verify_dataset(bad)
    assert "\n" not in str(e.value)
    data.write_bytes(raw)
    video = bad / "videos/observation.images.side/chunk-000/file-000.mp4"
    raw = video.read_bytes()
    video.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DatasetError, match=r"file-000\.mp4") as e:
        verify_dataset(bad)
    assert "\n" not in str(e.value)
