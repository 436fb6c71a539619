"""Video files through PyAV: encode frames (dataset episodes, evaluation videos), join episodes into
one file without re-encoding, decode a time range by seeking; `psnr` of two frames.

Frames of an episode carry presentation times i / fps. Joining appends each episode's packets with
its times shifted by the duration of the episodes before it, so episode k occupies
[from_timestamp_k, to_timestamp_k) in the joined file and every episode starts on a key frame
(each was encoded on its own).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from common.config import Strict
from common.errors import DreamTwinError


class VideoError(DreamTwinError):
    """A video file that cannot be written or read as expected."""


class VideoSettings(Strict):
    """Encoder settings: LeRobot's codec (AV1 via SVT-AV1, yuv420p, a key frame every 2 frames so
    that seeking decodes little) at crf 10, a higher quality than LeRobot's crf 30, for our small
    (64-128 px) frames; `lossless` stores RGB exactly (H.264 RGB, qp 0)."""

    codec: Literal["libsvtav1", "libx264", "libx264rgb"] = "libsvtav1"
    pix_fmt: Literal["yuv420p", "yuv444p", "rgb24"] = "yuv420p"
    crf: int = Field(10, ge=0, le=63)
    g: int = Field(2, ge=1, description="key-frame interval (GOP size)")
    preset: int | None = Field(
        None, description="SVT-AV1 preset 0-13 (higher is faster); none: encoder default"
    )

    @classmethod
    def lossless(cls) -> VideoSettings:
        return cls(codec="libx264rgb", pix_fmt="rgb24", crf=0, g=2)


def encode_video(
    frames: np.ndarray, path: str | Path, fps: float, settings: VideoSettings | None = None
) -> None:
    """Write uint8 [T, H, W, 3] frames as an MP4 (written to a temporary name, then renamed).

    With a yuv420p pixel format, odd heights / widths are padded by one edge pixel."""
    import av

    s = settings or VideoSettings()
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise VideoError(
            f"{path}: frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {list(frames.shape)}"
        )
    if s.pix_fmt == "yuv420p" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        # chroma subsampling needs even sizes: repeat the last row / column
        frames = np.pad(
            frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    h, w = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1000)
    options = {"crf": str(s.crf), "g": str(s.g)}
    if s.codec == "libsvtav1":
        # one-thread-per-core tiling is not deterministic across machines; keep it fixed
        options["svtav1-params"] = "lp=1" + (f":preset={s.preset}" if s.preset is not None else "")
    elif s.codec in ("libx264", "libx264rgb"):
        options.update({"threads": "1", "preset": "medium"})
        if s.crf == 0:
            options["qp"] = "0"
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream(s.codec, rate=rate, options=options)
        stream.width, stream.height = w, h
        stream.pix_fmt = "bgr24" if s.codec == "libx264rgb" else s.pix_fmt
        stream.time_base = Fraction(1, 1) / rate
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)


def concat_videos(inputs: list[Path], output: Path) -> list[tuple[float, float]]:
    """Join episode videos (same codec and size) into `output` by copying packets; returns each
    input's (from_timestamp, to_timestamp) in seconds within the joined file."""
    import av

    if not inputs:
        raise VideoError(f"{output}: nothing to join")
    tmp = output.with_name(output.name + ".tmp.mp4")
    spans: list[tuple[float, float]] = []
    offset = 0  # in the output stream's time base
    with av.open(str(tmp), mode="w") as out:
        ostream = None
        for path in inputs:
            with av.open(str(path)) as src:
                istream = src.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(istream, opaque=True)
                    ostream.time_base = istream.time_base
                if (istream.codec_context.width, istream.codec_context.height) != (
                    ostream.codec_context.width,
                    ostream.codec_context.height,
                ):
                    raise VideoError(f"{path}: frame size differs from the first video of {output.name}")
                tb, rate = istream.time_base, istream.average_rate
                if tb is None or rate is None:
                    raise VideoError(f"{path}: the video stream has no time base or frame rate")
                frame_dur = int(round(1 / (float(tb) * float(rate))))
                last = 0
                for packet in src.demux(istream):
                    if packet.pts is None:
                        continue  # the demuxer's end-of-stream flush packet (no timestamps)
                    last = max(last, packet.pts + frame_dur)
                    packet.pts += offset
                    packet.dts = packet.dts + offset if packet.dts is not None else None
                    packet.stream = ostream
                    out.mux(packet)
                spans.append((float(offset * tb), float((offset + last) * tb)))
                offset += last
    os.replace(tmp, output)
    return spans


def decode_frames(path: str | Path, from_timestamp: float, n_frames: int, fps: float) -> np.ndarray:
    """uint8 [n_frames, H, W, 3]: the frames at from_timestamp + i / fps, i < n_frames, found by
    seeking to the key frame before `from_timestamp` (never decoding the whole file)."""
    import av

    tol = 0.5 / fps
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as src:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            if stream.time_base is None:
                raise VideoError(f"{path}: the video stream has no time base")
            tb = float(stream.time_base)
            src.seek(int(from_timestamp / tb), stream=stream, backward=True, any_frame=False)
            for frame in src.decode(stream):
                if frame.pts is None:
                    continue  # a frame without a timestamp cannot be placed
                t = frame.pts * tb
                if t < from_timestamp - tol:
                    continue
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == n_frames:
                    break
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot decode ({e})") from None
    if len(out) != n_frames:
        raise VideoError(
            f"{path}: expected {n_frames} frames from t={from_timestamp:.3f}s, decoded {len(out)}"
        )
    return np.stack(out)


def video_info(path: str | Path) -> dict[str, object]:
    """LeRobot's per-feature `info` block for a video file."""
    import av

    with av.open(str(path)) as src:
        s = src.streams.video[0]
        cc = s.codec_context
        return {
            "video.height": cc.height,
            "video.width": cc.width,
            "video.codec": cc.codec.canonical_name,
            "video.pix_fmt": cc.pix_fmt,
            "video.fps": int(round(float(s.average_rate))) if s.average_rate else None,
            "video.channels": 3,
            "has_audio": len(src.streams.audio) > 0,
        }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images. The MSE is floored at 1e-10, so equal
    images give a finite 148.1 dB and means over frames stay finite."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))
