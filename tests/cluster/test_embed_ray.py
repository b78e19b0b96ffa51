"""``embed --ray`` equals the local ``embed`` row for row (pooled rows and moments), and ``query --ray``
answers as the local ``query`` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.corpus import write_video
from typer.testing import CliRunner

from jemc_infer.cli import app
from jemc_infer.index.store import Index

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _rows(index: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """file name → (pooled row, its window rows) of every live video."""
    with Index.open(index) as ix:
        live = {int(i): np.asarray(s.rows[r]) for s in ix.shards() for r, i in enumerate(s.ids) if i >= 0}
        windows = ix.windows(np.array(sorted(live)))
        return {Path(p).name: (live[v.id], np.asarray(windows[v.id].rows) if v.id in windows else None)
                for p, v in ix.videos().items() if v.id in live}


@pytest.fixture(scope="module")
def embedded(ray_cluster, runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """videos/ (four videos and a broken file) embedded here into local/ and on Ray into ray/;
    and the two runs' JSON summaries."""
    root = tmp_path_factory.mktemp("embedded")
    videos = root / "videos"
    videos.mkdir()
    for i in range(4):
        write_video(videos / f"v{i}.mp4", frames=25 + 10 * i, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    common = ["--model", runtime_bundle, "--flush-every", "2", "--quiet", "--json"]
    local = runner.invoke(app, [str(a) for a in ["embed", videos, "--index", root / "local", "--workers", "1", *common]])
    assert local.exit_code == 3, local.output  # 3: some videos failed (broken.mp4)
    on_ray = runner.invoke(app, [str(a) for a in ["embed", videos, "--index", root / "ray", "--ray", "local",
                                                  "--ray-actors", "2", *common]])
    assert on_ray.exit_code == 3, on_ray.output
    return root, json.loads(local.stdout), json.loads(on_ray.stdout)


def test_embed_on_ray_equals_the_local_embed_row_for_row(embedded: tuple[Path, dict, dict], runtime_bundle: Path) -> None:
    root, a, b = embedded
    assert b["embedded"] == a["embedded"] == 4 and list(b["failed"].values()) == list(a["failed"].values())
    assert "ray: 2 backbone actor(s), 1 decoding task(s) at a time" in b["messages"]
    want, got = _rows(root / "local"), _rows(root / "ray")
    assert sorted(got) == sorted(want) == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    for name, (row, wins) in want.items():
        # the same graphs on the same inputs; only the backbones' batches differ (per video on
        # Ray, shared across videos here), which onnxruntime may sum in another order
        np.testing.assert_allclose(got[name][0], row, rtol=0, atol=1e-5, err_msg=name)
        assert wins is not None and got[name][1] is not None and got[name][1].shape == wins.shape, name
        np.testing.assert_allclose(got[name][1], wins, rtol=0, atol=1e-5, err_msg=name)
    again = runner.invoke(app, [str(a) for a in ["embed", root / "videos", "--index", root / "ray", "--model", runtime_bundle,
                                                 "--ray", "local", "--quiet", "--json"]])
    assert json.loads(again.stdout)["skipped"] == 5  # resumable on Ray too: the manifest decides


def test_query_on_ray_answers_as_the_local_query(embedded: tuple[Path, dict, dict], runtime_bundle: Path) -> None:
    ask = ["query", "a man is cooking", "--index", embedded[0] / "ray", "--model", runtime_bundle, "-k", "3", "--json"]
    here = runner.invoke(app, [str(a) for a in ask])
    there = runner.invoke(app, [str(a) for a in [*ask, "--ray", "local", "--ray-actors", "2"]])
    assert here.exit_code == there.exit_code == 0, there.output
    assert here.stdout == there.stdout and len(here.stdout.splitlines()) == 3
    like = ["query", "--like", "1", "--index", embedded[0] / "ray", "--model", runtime_bundle, "--json"]
    assert runner.invoke(app, [str(a) for a in like]).stdout == runner.invoke(app, [str(a) for a in [*like, "--ray", "local"]]).stdout


def same_hits(a: tuple, b: tuple) -> bool:
    """The same hits (ids, paths, moments, warnings) and scores within float32 rounding: here the
    index's compact copy scores the winners in float64, the shard actors scan the float32 rows."""
    (ha, wa), (hb, wb) = a, b
    key = lambda hits: [[(h.rank, h.id, h.path, h.moment) for h in row] for row in hits]  # noqa: E731
    scores = lambda hits: [h.score for row in hits for h in row]  # noqa: E731
    return wa == wb and key(ha) == key(hb) and np.allclose(scores(ha), scores(hb), rtol=0, atol=1e-6)


def test_serve_on_ray_follows_new_snapshots(embedded: tuple[Path, dict, dict], runtime_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from jemc_infer.cluster import Cluster
    from jemc_infer.serve.library import Library

    index = tmp_path / "ix"
    shutil.copytree(embedded[0] / "ray", index)
    texts = ["a man is cooking", "a dog runs", "someone plays a guitar"]
    here, there = Library(index, runtime_bundle), Library(index, runtime_bundle, cluster=Cluster(actors=2))
    try:
        assert there.ray_actors == 2 and here.ray_actors == 0
        assert same_hits(here.search(texts, 10), there.search(texts, 10))
        write_video(tmp_path / "new.mp4", frames=40, size=(64, 48), audio="aac")
        r = runner.invoke(app, [str(a) for a in ["embed", tmp_path / "new.mp4", "--index", index, "--model", runtime_bundle,
                                                 "--workers", "1", "--quiet"]])
        assert r.exit_code == 0, r.output
        found = there.search(texts, 10)  # a new snapshot: its shards go to the actors
        assert same_hits(found, here.search(texts, 10)) and len(found[0][0]) == 5
    finally:
        here.close()
        there.close()


def test_ray_options_are_checked(tmp_path: Path) -> None:
    r = runner.invoke(app, ["query", "a dog", "--index", str(tmp_path), "--ray-actors", "2"])
    assert r.exit_code == 1 and "--ray-actors | 2 without --ray | expected --ray ADDRESS" in r.output
    r = runner.invoke(app, ["query", "a dog", "--index", str(tmp_path), "--ray", "videos/"])
    assert r.exit_code == 1 and "--ray | 'videos/' | expected local (a cluster on this machine" in r.output
