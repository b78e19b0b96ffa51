"""``embed`` keeps moments and ``query`` shows them; an index made before them still answers;
``query --like`` ranks by a video (its own row, or a file embedded on the fly)."""

from __future__ import annotations

import fractions
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from jemc_infer.cli import app
from jemc_infer.embed import embed as run_embed
from jemc_infer.index.store import Index
from jemc_infer.query import SettingError, query_like

pytest.importorskip("onnxruntime")
runner = CliRunner()


def run(*args: str | Path):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def write_textured(path: Path, seed: int, frames: int = 50, fps: int = 25, codec: str = "libx264", bit_rate: int | None = None) -> Path:
    """A video of its own: a random colour-block texture (seeded) drifting one block every few frames."""
    blocks = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        if bit_rate:
            vs.bit_rate = bit_rate
        for k in range(frames):
            img = np.roll(blocks, k // 10, axis=1).repeat(8, axis=0).repeat(8, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def reencode(src: Path, dst: Path, codec: str = "mpeg4", bit_rate: int = 150_000) -> Path:
    """``src`` decoded and encoded again with PyAV into another container, codec and bitrate."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream(codec, rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = vin.width, vin.height, "yuv420p", bit_rate
        for k, frame in enumerate(inp.decode(vin)):
            img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            img.pts, img.time_base = k, fractions.Fraction(1, int(vin.average_rate))
            out.mux(vs.encode(img))
        out.mux(vs.encode())
    return dst


@pytest.fixture(scope="module")
def collection(runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five distinct videos embedded into a new index (moments by default): (videos, index)."""
    root = tmp_path_factory.mktemp("like")
    videos = root / "videos"
    videos.mkdir()
    for i in range(5):
        write_textured(videos / f"t{i}.mp4", seed=i, frames=40 + 10 * i)
    r = run("embed", videos, "--index", root / "ix", "--model", runtime_bundle, "--workers", "1", "--quiet", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["embedded"] == 5, r.output
    return videos, root / "ix"


def test_query_shows_each_hits_moment(collection: tuple[Path, Path], runtime_bundle: Path) -> None:
    _, ix = collection
    r = run("query", "a man is cooking", "--index", ix, "--model", runtime_bundle, "-k", "5", "--json")
    assert r.exit_code == 0 and "moments" not in r.stderr, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(hits) == 5
    for h in hits:
        start, end = h["moment"]
        assert 0 <= start <= end <= h["duration"] + 1e-6
    r = run("query", "a man is cooking", "--index", ix, "--model", runtime_bundle, "-k", "2")
    assert r.exit_code == 0 and "moment" in r.stdout.splitlines()[0]
    assert all(re.search(r"  00:00:0\d–00:00:0\d  ", line) for line in r.stdout.splitlines()[1:]), r.stdout


def test_an_old_index_answers_and_gains_moments_only_when_asked(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_textured(videos / f"t{i}.mp4", seed=i)
    run_embed([videos], tmp_path / "ix", runtime_bundle, moments=False)  # as an index made before moments
    r = run("query", "a dog", "--index", tmp_path / "ix", "--model", runtime_bundle, "--json")
    assert r.exit_code == 0 and all(json.loads(line)["moment"] is None for line in r.stdout.splitlines())
    assert r.stderr.count("keeps no moments") == 1 and "--with-moments" in r.stderr
    embed = ("embed", videos, "--index", tmp_path / "ix", "--model", runtime_bundle, "--workers", "1", "--quiet", "--json")
    s = json.loads(run(*embed).stdout)
    assert s["skipped"] == 2 and any("keeps no moments" in m for m in s["messages"])  # not added silently
    s = json.loads(run(*embed, "--with-moments").stdout)
    assert s["embedded"] == 2 and any("adding moments" in m for m in s["messages"])  # every video, none mixed
    with Index.open(tmp_path / "ix") as index:
        assert index.has_moments and index.without_moments() == set()
    r = run("query", "a dog", "--index", tmp_path / "ix", "--model", runtime_bundle, "--json")
    assert "moments" not in r.stderr and all(json.loads(line)["moment"] for line in r.stdout.splitlines())
    r = run(*embed, "--no-moments")
    assert r.exit_code == 1 and "moments | off | expected on" in r.stderr


def test_like_a_video_finds_itself_first(collection: tuple[Path, Path], runtime_bundle: Path) -> None:
    videos, ix = collection
    with Index.open(ix) as index:
        ids = {Path(p).name: r.id for p, r in index.videos().items()}
    for question in (ids["t2.mp4"], str(ids["t2.mp4"]), "../videos/t2.mp4", videos / "t2.mp4"):
        hits, warnings = query_like(ix, question, k=3, model=runtime_bundle)
        assert hits[0].id == ids["t2.mp4"] and hits[0].score == pytest.approx(2.0, abs=1e-4) and not warnings  # Σ of 2 cosines of 1
        assert hits[0].moment is not None and [h.rank for h in hits] == [1, 2, 3]
    hits, _ = query_like(ix, ids["t2.mp4"], k=2, model=runtime_bundle, exclude_self=True)
    assert ids["t2.mp4"] not in [h.id for h in hits] and len(hits) == 2
    hits, _ = query_like(ix, ids["t2.mp4"], k=1, model=runtime_bundle, space_weights="object=1,activity=0")
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(SettingError, match=r"video \| 'nowhere.mp4': no indexed video and no file \| expected an indexed"):
        query_like(ix, "nowhere.mp4", model=runtime_bundle)


def test_a_reencoded_copy_ranks_its_original_first(collection: tuple[Path, Path], runtime_bundle: Path, tmp_path: Path) -> None:
    videos, ix = collection
    copy = reencode(videos / "t3.mp4", tmp_path / "copy.mkv")
    r = run("query", "--like", copy, "--index", ix, "--model", runtime_bundle, "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert Path(hits[0]["path"]).name == "t3.mp4" and hits[0]["like"] == str(copy)
    assert hits[0]["score"] > hits[1]["score"] and len(hits) == 5
    r = run("query", "a cat", "--like", copy, "--index", ix, "--model", runtime_bundle)
    assert r.exit_code == 1 and "--like | with TEXT | expected one question" in r.stderr
    r = run("query", "--like", tmp_path / "missing.mp4", "--index", ix, "--model", runtime_bundle)
    assert r.exit_code == 1 and "error: --like | " in r.stderr and "no indexed video and no file" in r.stderr
