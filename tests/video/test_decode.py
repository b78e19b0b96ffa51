"""Decoding real files of many kinds, and refusing broken ones with readable reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.corpus import FORMATS, index_of

from jemc_infer.errors import InputError
from jemc_infer.video.decode import Chunk, DecodeError, VideoReader
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input


def read(path: Path, sampling: Sampling = Sampling(), **streams: bool) -> tuple[VideoReader, Chunk]:
    reader = VideoReader(path, sampling, **streams)
    chunks = list(reader)
    merged = Chunk(
        frames=np.concatenate([c.frames for c in chunks]), frame_times=np.concatenate([c.frame_times for c in chunks]),
        clips=np.concatenate([c.clips for c in chunks]), clip_times=np.concatenate([c.clip_times for c in chunks]),
        audio=np.concatenate([c.audio for c in chunks]),
    )
    return reader, merged


@pytest.mark.parametrize("name", ["h264.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi", "hevc.mov", "mjpeg-odd.avi", "h264-odd-444.mkv"])
def test_containers_and_codecs(videos: dict[str, Path], name: str) -> None:
    """2 s at 25 fps: object frames at 0 s and 1 s, three 16-frame clips, 2 s of 22.05 kHz audio."""
    reader, out = read(videos[name])
    # this AVI muxer stamps frames 1.. one frame late, so the last frame ends at 2.04 s: a third sample
    n = 3 if name == "mpeg4.avi" else 2
    assert out.frames.shape == (n, 224, 224, 3) and out.frames.dtype == np.uint8
    assert out.frame_times.tolist() == [0.0, 1.0, 2.0][:n]
    assert out.clips.shape == (3, 16, 224, 224, 3) and out.clip_times.tolist() == [0.0, 0.64, 1.28]
    has_audio = "audio" in FORMATS[name]
    assert reader.info.has_audio == has_audio
    if has_audio:
        assert abs(len(out.audio) - 2 * 22050) < 0.1 * 22050 and out.audio.dtype == np.float32
        assert 0.1 < np.abs(out.audio).max() <= 1.0  # the 0.3-amplitude tone survived resampling to mono
    else:
        assert len(out.audio) == 0
    if name != "mpeg4.avi":
        assert [index_of(f) for f in out.frames] == [0, 25]
        assert [index_of(f) for f in out.clips[1]] == [(16 + j) % 28 for j in range(16)]
    assert reader.stats.decoded_frames == 50


def test_downsampling_to_25_fps_drops_frames_on_one_timeline(videos: dict[str, Path]) -> None:
    reader, out = read(videos["fps60.mp4"])
    # target j/25 s shows frame floor(2.4 j) of the 60 fps video
    assert [index_of(f) for f in out.clips[0]] == [int(2.4 * j) % 28 for j in range(16)]
    assert [index_of(f) for f in out.frames] == [0, 60 % 28]
    assert len(out.clips) == 3 and reader.info.fps == 60


def test_upsampling_repeats_frames_and_ntsc_rate(videos: dict[str, Path]) -> None:
    _, out = read(videos["fps7.5.mkv"])
    assert [index_of(f) for f in out.clips[0]] == [int(j * 7.5 / 25 + 1e-9) for j in range(16)]
    assert [index_of(f) for f in out.frames] == [0, 7, 15]  # frames on screen at 0, 1, 2 s
    _, out = read(videos["ntsc.mp4"])
    assert [index_of(f) for f in out.frames] == [0, 29 % 28, 59 % 28, 89 % 28]  # 3.003 s: 0, 1, 2, 3 s


def test_uniform_frames(videos: dict[str, Path]) -> None:
    _, out = read(videos["h264.mp4"], Sampling(num_frames=4))
    assert np.allclose(out.frame_times, [0.24, 0.72, 1.24, 1.72])  # frames on screen at .25 .75 1.25 1.75
    assert [index_of(f) for f in out.frames] == [6, 18, 31 % 28, 43 % 28]


def test_short_videos_are_padded_by_repetition(videos: dict[str, Path]) -> None:
    reader, out = read(videos["one-frame.mp4"])
    assert out.frames.shape[0] == 1 and out.clips.shape[0] == 1 and reader.stats.padded
    assert {index_of(f) for f in out.clips[0]} == {0}
    reader, out = read(videos["five-frames.mp4"])
    assert [index_of(f) for f in out.clips[0]] == [j % 5 for j in range(16)]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_honoured(videos: dict[str, Path], rotation: int) -> None:
    reader, out = read(videos[f"rot{rotation}.mp4"])
    _, upright = read(videos["rot0.mp4"])
    assert reader.info.rotation == rotation
    expected = np.rot90(upright.frames[0], rotation // 90)
    assert np.abs(out.frames[0].astype(int) - expected.astype(int)).mean() < 6
    assert (reader.info.width, reader.info.height) == ((96, 128) if rotation % 180 else (128, 96))


def test_long_video_comes_in_bounded_windows(videos: dict[str, Path]) -> None:
    reader = VideoReader(videos["long.mkv"], Sampling(window_seconds=8.0))
    chunks = list(reader)
    assert len(chunks) >= 7  # 60 s in 8 s windows
    assert all(len(c.frames) <= 9 and len(c.clips) <= 14 for c in chunks)
    assert all(abs(len(c.audio) - 8 * 22050) < 1.5 * 22050 for c in chunks[:-1])
    times = np.concatenate([c.frame_times for c in chunks])
    assert times.tolist() == [float(t) for t in range(60)]
    clip_times = np.concatenate([c.clip_times for c in chunks])
    assert len(clip_times) == 60 * 25 // 16 and np.allclose(np.diff(clip_times), 0.64)
    assert reader.stats.object_frames == 60 and abs(reader.stats.duration - 60.0) < 1e-6


def test_selected_streams_only(videos: dict[str, Path]) -> None:
    reader, out = read(videos["h264.mp4"], object_stream=True, activity_stream=False, audio_stream=False)
    assert len(out.frames) == 2 and len(out.clips) == 0 and len(out.audio) == 0


@pytest.mark.parametrize(("name", "reason"), [
    ("zero_bytes.mp4", "empty file (0 bytes)"),
    ("random_bytes.mp4", "not a video FFmpeg can read"),
    ("text.avi", "not a video FFmpeg can read"),
    ("truncated_5.mp4", "not a video FFmpeg can read"),
    ("truncated_50.mp4", "truncated: decoded 2.0 s of the 4.0 s"),
    ("audio_only.mp4", "no video stream (audio-only file)"),
])
def test_broken_files_fail_with_a_reason(broken: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        read(broken[name])
    assert str(err.value).startswith(reason)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="file not found"):
        read(tmp_path / "nope.mp4")


def test_mostly_complete_file_decodes_with_a_warning(broken: dict[str, Path]) -> None:
    reader, out = read(broken["truncated_90.mp4"])
    assert len(out.frames) == 4 and reader.stats.warnings and "audio dropped" in reader.stats.warnings[0]


def test_normalisation_matches_the_backbones() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    x = resnet_input(frames)
    want = ((frames / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(0, 3, 1, 2)
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 5) and np.allclose(x, want, atol=1e-5)
    clips = frames[None]
    y = i3d_input(clips)
    assert y.shape == (1, 3, 2, 4, 5) and y.min() >= -1 and y.max() <= 1
    assert np.allclose(y, (clips / 127.5 - 1).transpose(0, 4, 1, 2, 3), atol=1e-6)


def test_sampling_validation() -> None:
    with pytest.raises(InputError, match="frame_rate"):
        Sampling(frame_rate=0)
    with pytest.raises(InputError, match="resize=200 < crop=224"):
        Sampling(resize=200)
    assert Sampling().fingerprint() == Sampling(window_seconds=2).fingerprint() != Sampling(frame_rate=2).fingerprint()
