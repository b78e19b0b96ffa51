"""The training loop: it learns, it resumes exactly after a kill, it refuses what it cannot do."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402

from jemc_infer.errors import InputError  # noqa: E402
from jemc_infer.nn import JEMC, model_from_bundle  # noqa: E402
from jemc_infer.text import Vocabulary  # noqa: E402
from jemc_infer.train.data import open_dataset, write_dataset  # noqa: E402
from jemc_infer.train.loop import RunConflictError, load_log, run_dir_for, train, validate  # noqa: E402


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "weights.safetensors"))


def test_short_run_raises_validation_rsum(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    config = dataclasses.replace(tiny_train_config, epochs=4)
    result = train(tiny_data, "jemc", tmp_path / "m", config, progress=False, echo=lambda s: None)
    log = load_log(result.log)
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    ds = open_dataset(tiny_data)
    vocab = Vocabulary.load(run_dir_for(tmp_path / "m") / "vocab.json")
    torch.manual_seed(config.seed)
    untrained = validate(JEMC(model_from_bundle(tmp_path / "m").config), vocab, ds)["rsum"]
    rsums = [r["val"]["rsum"] for r in log]
    assert result.best_rsum == max(rsums) and result.best_epoch == int(np.argmax(rsums))
    assert result.best_rsum > untrained + 60, (untrained, rsums)
    assert rsums[-1] > rsums[0]
    assert log[-1]["loss"] < log[0]["loss"]
    # the bundle is the best epoch's model
    again = validate(model_from_bundle(tmp_path / "m"), vocab, ds)
    assert again["rsum"] == pytest.approx(result.best_rsum)


TRAIN_SLOWLY = Path(__file__).resolve().parents[1] / "support" / "train_slowly.py"


def _state(run: Path) -> dict:
    try:
        with safe_open(str(run / "state.safetensors"), framework="pt") as f:
            return json.loads(f.metadata()["state"])
    except Exception:  # noqa: BLE001 - not written yet
        return {}


@pytest.mark.parametrize(("sig", "kill_at"), [
    (signal.SIGKILL, (1, 3)), (signal.SIGINT, (0, 5)),
    pytest.param(signal.SIGKILL, (0, 2), marks=pytest.mark.slow), pytest.param(signal.SIGKILL, (1, 0), marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, (2, 9), marks=pytest.mark.slow), pytest.param(signal.SIGINT, (2, 1), marks=pytest.mark.slow),
])
def test_resume_after_kill_matches_uninterrupted_run(tiny_data: Path, tmp_path: Path, tiny_train_config, sig, kill_at) -> None:
    """Kill (SIGKILL) or interrupt (Ctrl-C) a training process mid-run; rerunning finishes with
    bit-identical weights and the same log as a run that was never stopped."""
    config = dataclasses.replace(tiny_train_config, epochs=3, checkpoint_seconds=0.0)
    reference = train(tiny_data, "shared-resnet-audio", tmp_path / "ref", config, progress=False, echo=lambda s: None)

    run = run_dir_for(tmp_path / "run")
    cfg_json = json.dumps({k: (str(v) if k == "loss" and v else v) for k, v in dataclasses.asdict(config).items()})
    child = subprocess.Popen([sys.executable, TRAIN_SLOWLY, str(tiny_data), str(tmp_path / "run"), cfg_json],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        st = _state(run)
        if (st.get("epoch", 0), st.get("step", 0)) >= kill_at:
            break
        time.sleep(0.02)
    assert child.poll() is None, f"child ended before the kill: {child.stderr.read().decode()[-2000:]}"
    os.kill(child.pid, sig)
    assert child.wait(timeout=60) != 0
    killed_at = _state(run)
    assert killed_at["epoch"] < 3
    if sig == signal.SIGINT:  # a graceful stop checkpoints where it stopped
        assert (killed_at["epoch"], killed_at["step"]) >= kill_at
        assert b"KeyboardInterrupt" in child.stderr.read()

    messages: list[str] = []
    resumed = train(tiny_data, "shared-resnet-audio", tmp_path / "run", config, progress=False, echo=messages.append)
    assert messages and messages[0].startswith("resuming")
    assert resumed.best_epoch == reference.best_epoch and resumed.best_rsum == reference.best_rsum
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "captions_per_s"} for r in rows]  # noqa: E731
    assert strip(load_log(resumed.log)) == strip(load_log(reference.log))
    assert not list(run.glob(".*tmp*")), "no temporary files left behind"


def test_rerun_with_other_settings_is_refused_then_restart_works(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    config = dataclasses.replace(tiny_train_config, epochs=1)
    train(tiny_data, "weighted-resnet", tmp_path / "m", config, progress=False, echo=lambda s: None)
    again = train(tiny_data, "weighted-resnet", tmp_path / "m", config, progress=False, echo=lambda s: None)
    assert again.epochs_run == 0
    other = dataclasses.replace(config, lr=1e-3)
    with pytest.raises(RunConflictError, match=r"different settings \(train\).*restart the run") as refused:
        train(tiny_data, "weighted-resnet", tmp_path / "m", other, progress=False, echo=lambda s: None)
    assert refused.value.differences == ("train",) and "--" not in str(refused.value)  # library terms, no CLI flag
    redone = train(tiny_data, "weighted-resnet", tmp_path / "m", other, restart=True, progress=False, echo=lambda s: None)
    assert redone.epochs_run == 1
    longer = train(tiny_data, "weighted-resnet", tmp_path / "m", dataclasses.replace(other, epochs=2),
                   progress=False, echo=lambda s: None)
    assert longer.epochs_run == 1 and len(load_log(longer.log)) == 2


def test_preset_needing_an_absent_feature_is_refused(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    ds = open_dataset(tiny_data)
    no_audio = write_dataset(tmp_path / "msvd-like", ds.videos, {k: np.asarray(ds.features[k]) for k in ("resnet", "i3d")},
                             [(ds.videos[r], t) for r, t in ds.captions], ds.splits)
    with pytest.raises(InputError, match=r"no \['audio'\] features \| expected what preset 'jemc' uses"):
        train(no_audio.path, "jemc", tmp_path / "m", tiny_train_config, progress=False)
    with pytest.raises(InputError, match="expected one of: vse-resnet"):
        train(no_audio.path, "resnet-50", tmp_path / "m", tiny_train_config, progress=False)
    assert not (tmp_path / "m").exists()


def test_resume_refuses_changed_data(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    import shutil

    shutil.copytree(tiny_data, tmp_path / "d")
    config = dataclasses.replace(tiny_train_config, epochs=1)
    train(tmp_path / "d", "i3d", tmp_path / "m", config, progress=False, echo=lambda s: None)
    arr = np.load(tmp_path / "d" / "i3d.npy")
    arr[0, 0] += 1.0
    np.save(tmp_path / "d" / "i3d.npy", arr)
    with pytest.raises(InputError, match=r"different settings \(dataset\)"):
        train(tmp_path / "d", "i3d", tmp_path / "m", dataclasses.replace(config, epochs=2), progress=False)
