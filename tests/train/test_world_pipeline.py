"""The main job on a synthetic world, end to end, where every right answer is known.

`jemc-infer demo` runs for real (each step the CLI command a user types, in a subprocess): world
→ backbones trained on its train split → features → table1 → ONNX export → embed → queries.

- The miniature (default suite, about a minute) checks the wiring: 40 videos are too few to learn
  anything that generalises, so it embeds and scores the training videos; the deployed path
  must find them far above chance and agree with ``evaluate`` on the features.
- Under ``slow``, on the default 300-video world: the tests of the tests — the deployed path rerun
  with a wiring fault injected (two colour channels swapped, every video given another video's
  audio, every clip's frames reversed) must rank the attribute the fault breaks worse — the
  issue's quality bar on the held-out split, and cues in videos another program made (Pillow's
  shapes, triangle-wave tones) found among the held-out videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from jemc_infer.embed import EngineEncoder, embed  # noqa: E402
from jemc_infer.train import world as world_module  # noqa: E402
from jemc_infer.train import world_eval  # noqa: E402
from jemc_infer.train.demo import DemoSettings, run_demo  # noqa: E402

MINI = dict(videos=40, seed=3, epochs=30, batch_size=32, split="train")


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mini-demo")
    lines: list[str] = []
    report = run_demo(DemoSettings(out=out, **MINI), echo=lines.append)
    report["lines"] = lines
    return out, report


def _auc(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over queries of P(a right video scores above a wrong one): 1 perfect, 0.5 chance."""
    out = []
    for s, r in zip(scores, relevant, strict=True):
        pos, neg = s[r], s[~r]
        if len(pos) and len(neg):
            out.append(float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("full-demo")
    return out, run_demo(DemoSettings(out=out), echo=lambda line: None)


def _attribute_auc(out: Path, index: Path, attribute: str) -> float:
    """How well the queries naming only ``attribute`` rank the held-out videos that have it."""
    world = world_module.load_world(out / "world")
    videos = world.split("test")
    queries = [q for q in world_eval.attribute_queries(videos) if set(q.attributes) == {attribute}]
    assert len(queries) >= 3, f"too few {attribute} queries in the miniature world"
    scores = world_eval.deployed_scores(index, out / "models" / "jemc", [q.text for q in queries], [v.id for v in videos])
    relevant = np.array([[world_module.matches(v, q.attributes) for v in videos] for q in queries])
    return _auc(scores, relevant)


def test_demo_finds_the_right_videos_through_the_deployed_path(mini: tuple[Path, dict]) -> None:
    out, report = mini
    n_videos = len(world_module.load_world(out / "world").split("train"))
    deployed = report["held_out"]["deployed"]
    chance_r5 = 100.0 * 5 / n_videos
    # far above chance: the right video in the top 5 for most captions, first for many
    assert deployed["t2v"]["r5"] >= chance_r5 + 40, deployed["t2v"]
    assert deployed["t2v"]["r1"] >= 5 * 100.0 / n_videos, deployed["t2v"]
    # the deployed path (files → embed → index → query, ONNX) agrees with evaluate on the features
    assert report["max_difference"] <= 0.5
    # the user sees hits with their ground truth, and the commands to type next
    text = "\n".join(report["lines"])
    assert "$ jemc-infer features" in text and "$ jemc-infer embed" in text and 'jemc-infer query "' in text
    assert (out / "recall.png").stat().st_size > 1000


def test_a_rerun_reuses_what_is_built(mini: tuple[Path, dict]) -> None:
    out, _ = mini
    lines: list[str] = []
    report = run_demo(DemoSettings(out=out, **MINI), echo=lines.append)
    text = "\n".join(lines)
    assert "reusing the world" in text and "reusing the backbones" in text and "reusing the ONNX graphs" in text
    assert "world make" not in text and "$ jemc-infer export" not in text
    assert report["max_difference"] <= 0.5


def test_backbones_of_an_older_design_are_not_reused(tmp_path: Path) -> None:
    """Weights of an older compact design do not load into today's networks: the demo trains them
    again (and drops what was made from them) instead of failing on them."""
    import json

    from jemc_infer.train import demo as demo_module
    from jemc_infer.train.world_backbones import FILES

    root, weights = tmp_path / "world", tmp_path / "world" / "weights"
    weights.mkdir(parents=True)
    for name in FILES.values():
        (weights / name).write_bytes(b"x")
    report = {"seed": 0, "world": str(root), "streams": {s: {"file": f} for s, f in FILES.items()}}
    for fmt, reused in ((world_module.BACKBONES_FORMAT, True), (world_module.BACKBONES_FORMAT - 1, False), (None, False)):
        (weights / "backbones.json").write_text(json.dumps({**report, "format": fmt}), encoding="utf-8")
        assert demo_module._backbones_match(weights, root, 0) is reused, fmt


def test_a_new_world_drops_what_the_old_one_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another world in the same folder: its backbones (trained on the old world's training split,
    which may hold the new one's test videos), features, models, index and test videos all go."""
    import json

    from jemc_infer.train import demo as demo_module

    made = ["world/weights/vgg_compact.safetensors", "features/resnet.npy", "models/jemc/config.json",
            "index/lock", "test-videos/world0001.mp4", "report.json"]
    for name in made:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "world" / "world.json").write_text(json.dumps({"seed": 0, "n_videos": 40}), encoding="utf-8")

    class Stop(Exception):
        pass

    def stop(self, step: str, *args: str) -> None:
        raise Stop(step)

    monkeypatch.setattr(demo_module._Runner, "run", stop)
    with pytest.raises(Stop, match="world"):
        run_demo(DemoSettings(out=tmp_path, videos=50), echo=lambda line: None)
    assert [name for name in made if (tmp_path / name).exists()] == []


def test_models_of_another_recipe_are_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A demo folder whose models were trained with other table1 options (an older demo's, or none
    recorded): the models, the index and the report go before table1 runs (it would refuse to
    resume another recipe's runs); with the same options, they stay (table1 resumes or reuses)."""
    import json

    from jemc_infer.train import demo as demo_module

    made = ["features/resnet.npy", "models/jemc/config.json", "models/jemc.run/state.safetensors", "index/lock", "report.json"]

    class Stop(Exception):
        pass

    def stop(self, step: str, *args: str) -> None:
        if step == "table1":
            raise Stop(step)

    monkeypatch.setattr(demo_module, "_world_matches", lambda root, settings: True)
    monkeypatch.setattr(demo_module, "_backbones_match", lambda weights, root, seed: True)
    monkeypatch.setattr(demo_module.world_module, "load_world", lambda root: None)
    monkeypatch.setattr(demo_module._Runner, "run", stop)
    stamp = tmp_path / "models" / demo_module.TRAINING_FILE
    ours = None  # what this demo records, read after its first run
    for recorded, kept in ((None, False), (["--epochs", "1"], False), ("ours", True)):
        for name in made:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"x")
        stamp.unlink(missing_ok=True)
        if recorded is not None:
            stamp.write_text(ours if recorded == "ours" else json.dumps(recorded), encoding="utf-8")
        with pytest.raises(Stop):
            run_demo(DemoSettings(out=tmp_path), echo=lambda line: None)
        assert (tmp_path / "features/resnet.npy").exists()
        assert [(tmp_path / name).exists() for name in made[1:]] == [kept] * 4, recorded
        ours = stamp.read_text(encoding="utf-8")


class _SwapRedBlue(EngineEncoder):
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        return super().encode_frames(np.ascontiguousarray(frames[..., ::-1]))


class _ReverseClips(EngineEncoder):
    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        return super().encode_clips(np.ascontiguousarray(clips[:, ::-1]))


class _OthersAudio(EngineEncoder):
    """Each video's audio features are the previous video's (the first gets silence's)."""

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        previous = getattr(self, "_previous", np.zeros_like(wave))
        self._previous = wave
        return super().encode_audio(previous)


@pytest.mark.slow
@pytest.mark.parametrize(("encoder", "attribute"), [(_SwapRedBlue, "colour"), (_ReverseClips, "activity"), (_OthersAudio, "sound")],
                         ids=["swap-colour-channels", "reverse-frames", "others-audio"])
def test_a_wiring_fault_drops_the_attribute_it_breaks(full: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      encoder: type, attribute: str) -> None:
    out, _ = full
    clean = _attribute_auc(out, out / "index", attribute)
    assert clean >= 0.75, f"{attribute} queries are not answered well enough to test a fault ({clean:.2f})"
    monkeypatch.setattr("jemc_infer.embed.EngineEncoder", encoder)
    from jemc_infer.collection import Options

    embed([out / "test-videos"], tmp_path / "index", out / "models" / "jemc", backend="onnxruntime", device="cpu",
          options=Options(workers=1))  # one decoder: videos reach the encoder in order (others-audio relies on it)
    faulty = _attribute_auc(out, tmp_path / "index", attribute)
    assert faulty <= clean - 0.15, f"{attribute}: AUC {clean:.2f} clean, {faulty:.2f} with the fault"


@pytest.mark.slow
def test_the_full_demo_meets_the_retrieval_bar(full: tuple[Path, dict]) -> None:
    """Fusion R@5 >= 80% on held-out captions, fusion rsum above every single stream, the two ways of
    computing the figures within 0.5 points (default 300-video world). The demo's time is a measured
    figure (README, from its report.json), not asserted: the suite shares the machine."""
    import json

    out, report = full
    deployed = report["held_out"]["deployed"]
    assert deployed["t2v"]["r5"] >= 80.0, deployed["t2v"]
    rows = {r["preset"]: r["metrics"]["rsum"] for r in json.loads((out / "models" / "table1.json").read_text())["rows"]}
    assert all(rows["jemc"] > rsum for preset, rsum in rows.items() if preset != "jemc"), rows
    assert report["max_difference"] <= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["object", "activity", "audio"])
def test_the_full_demo_meets_the_attribute_bar(full: tuple[Path, dict], stream: str) -> None:
    """Attribute precision@5 >= 90% for the stream's queries through the deployed fusion model."""
    deployed = full[1]["held_out"]["deployed"]
    assert deployed["p5"][stream] >= 90.0, (stream, deployed["p5"])


# A query, the foreign video that has its cue, and the cue (world attributes).
_FOREIGN_QUERIES = {
    "a red circle": ("pil_red_circle", {"colour": "red", "shape": "circle"}),
    "a blue square": ("pil_blue_square", {"colour": "blue", "shape": "square"}),
    "a yellow triangle": ("pil_yellow_triangle", {"colour": "yellow", "shape": "triangle"}),
    "a high tone": ("pil_red_circle", {"sound": "high"}),
    "a low tone": ("pil_blue_square", {"sound": "low"}),
    "something staying still": ("pil_yellow_triangle", {"activity": "still"}),
}


@pytest.mark.slow
def test_cues_drawn_by_another_program_are_found(full: tuple[Path, dict], tmp_path: Path) -> None:
    """The world varies what is not a cue so that the cue is learnt, not the renderer: shapes
    drawn by Pillow at a size, rate and codec the world never uses, with triangle-wave tones
    (tests/support/foreign_videos.py), embedded among the held-out videos, rank for each query
    above every held-out video without its cue but at most one."""
    from support.foreign_videos import write_all

    from jemc_infer.query import query

    out, _ = full
    write_all(tmp_path / "foreign")
    embed([out / "test-videos", tmp_path / "foreign"], tmp_path / "index", out / "models" / "jemc",
          backend="onnxruntime", device="cpu")
    held_out = {v.id: v for v in world_module.load_world(out / "world").split("test")}
    hits, _ = query(tmp_path / "index", list(_FOREIGN_QUERIES), k=len(held_out) + 3, model=out / "models" / "jemc",
                    backend="onnxruntime", device="cpu")
    for (text, (stem, cue)), row in zip(_FOREIGN_QUERIES.items(), hits, strict=True):
        ranked = [Path(h.path).stem for h in row]
        above = ranked[:ranked.index(stem)]
        wrong = [s for s in above if s in held_out and not world_module.matches(held_out[s], cue)]
        assert len(wrong) <= 1, (text, stem, ranked.index(stem) + 1, wrong)
