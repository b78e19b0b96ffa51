"""The training loop: Adam, step decay, hardest-negative ranking losses, best-rsum checkpoint.

A run trains ``--out BUNDLE`` and keeps its state next to it in ``BUNDLE.run/``:

- ``state.safetensors`` — model and optimizer tensors, with the run's JSON state (epoch, step,
  best rsum, the exact settings) in the file's metadata: one file, replaced atomically, so a
  kill at any moment leaves a consistent checkpoint;
- ``vocab.json`` — the vocabulary built from the training captions;
- ``log.jsonl`` — one JSON line per epoch (loss, rate, validation metrics).

Rerunning the same command resumes where the last checkpoint (every epoch, and every
``checkpoint_seconds`` within one) left off; the batches of an epoch are a function of the seed
and the epoch number, so a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jemc_infer.atomic import write_file
from jemc_infer.config import LossMode, ModelConfig
from jemc_infer.errors import InputError
from jemc_infer.nn import JEMC, resolve_device, save_model
from jemc_infer.text import Vocabulary
from jemc_infer.train.data import DATASET_FILE, FeatureDataset, open_dataset
from jemc_infer.train.evaluate import embed_split, fused_similarity
from jemc_infer.train.losses import ranking_loss
from jemc_infer.train.metrics import retrieval_metrics
from jemc_infer.train.presets import Preset, get_preset

STATE_FORMAT = "jemc-train-state/1"
STATE_FILE, VOCAB_FILE, LOG_FILE = "state.safetensors", "vocab.json", "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; defaults as the paper and its official code."""

    epochs: int = 30  # passes over the training captions
    batch_size: int = 128  # captions (with their videos) per step
    lr: float = 2e-4  # Adam learning rate
    lr_step: int = 15  # multiply the learning rate by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    grad_clip: float = 2.0  # max gradient norm, per space (spaces train independently)
    margin: float = 0.2  # hinge margin α
    loss: LossMode | None = None  # None: the preset's loss
    word_dim: int = 300  # word-embedding size
    embed_dim: int = 1024  # joint-space size
    min_count: int = 4  # vocabulary threshold
    seed: int = 0
    checkpoint_seconds: float = 120.0  # also checkpoint within an epoch this often
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"; bit-exact only on the CPU

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share (epochs may grow; checkpointing may change)."""
        d = dataclasses.asdict(self)
        for k in ("epochs", "checkpoint_seconds", "device"):
            d.pop(k)
        d["loss"] = str(d["loss"]) if d["loss"] is not None else None
        return d


@dataclass(frozen=True)
class TrainResult:
    bundle: Path  # the best checkpoint, as a bundle
    best_epoch: int  # 0-based
    best_rsum: float
    epochs_run: int  # epochs trained by this call (0 if the run was already complete)
    log: Path


def run_dir_for(out: Path) -> Path:
    """Where a run writing bundle ``out`` keeps its state."""
    return out.with_name(out.name + ".run")


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    old = torch.are_deterministic_algorithms_enabled()
    # CUDA has kernels without a deterministic variant: warn there rather than fail
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)


def _save_state(path: Path, model: JEMC, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    state = {**state, "param_groups": osd["param_groups"]}
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata={"state": json.dumps(state)}))


def _load_state(path: Path, model: JEMC, opt: torch.optim.Optimizer) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            per_param.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state


def _read_state_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["state"])
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise InputError(f"{path} | unreadable checkpoint ({type(err).__name__}) | expected a training state; rerun with --restart") from None


def _check_features(preset: Preset, ds: FeatureDataset) -> None:
    absent = [f for f in preset.features if not ds.has_feature(f)]
    if absent:
        raise InputError(
            f"{ds.path / DATASET_FILE} | no {absent} features | expected what preset {preset.name!r} uses "
            f"({list(preset.features)}); the dataset has {[f for f in ds.features if ds.has_feature(f)]}"
        )


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def validate(model: JEMC, vocab: Vocabulary, ds: FeatureDataset, split: str = "val") -> dict:
    sp = ds.split(split)
    text, video = embed_split(model, vocab, ds, sp)
    return retrieval_metrics(fused_similarity(model.config, text, video), sp.caption_video)


def train(
    data: Path | str,
    preset: str | Preset,
    out: Path | str,
    config: TrainConfig = TrainConfig(),
    restart: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train a preset on a feature dataset, keeping the best-validation-rsum model as a bundle.

    Args:
        data: A feature dataset directory with ``train`` and ``val`` splits.
        preset: A :class:`Preset` or its name (see ``jemc_infer.train.presets``).
        out: The bundle to write; run state goes to ``<out>.run/``.
        config: Hyper-parameters.
        restart: Discard an existing run's state instead of resuming it.
        progress: Show a progress bar (on stderr).
        echo: Where one-line status messages go.

    Returns:
        What was trained and where it is.

    Raises:
        InputError: Bad data, a preset the data cannot feed, or a run with other settings in
            the way (its message says how to proceed).
    """
    out = Path(out)
    preset = get_preset(preset) if isinstance(preset, str) else preset
    device = resolve_device(config.device)
    ds = open_dataset(data)
    _check_features(preset, ds)
    for split in ("train", "val"):
        if split not in ds.splits or not ds.split(split).captions:
            raise InputError(f"{ds.path / DATASET_FILE} | no {split!r} split with captions (has {sorted(ds.splits)}) | expected 'train' and 'val' splits")
    loss_mode = LossMode(config.loss or preset.loss)
    run = run_dir_for(out)
    state_path = run / STATE_FILE
    if restart and run.exists():
        if not (run / STATE_FILE).exists() and any(run.iterdir()):
            raise InputError(f"{run} | not a training run directory | expected {STATE_FILE} inside before deleting it")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)

    train_split = ds.split("train")
    if state_path.exists():
        vocab = Vocabulary.load(run / VOCAB_FILE)
    else:
        vocab = Vocabulary.build(train_split.captions, min_count=config.min_count)
        write_file(run / VOCAB_FILE, vocab.save)
    model_config = ModelConfig(
        spaces=preset.spaces, vocab_size=len(vocab),
        feature_dims={f: ds.feature_dims[f] for f in preset.features},
        word_dim=config.word_dim, embed_dim=config.embed_dim,
    )
    identity = json.loads(json.dumps({  # in its JSON form, as it is compared with a saved one
        "format": STATE_FORMAT, "preset": preset.name, "train": config.identity(),
        "model": model_config.to_json(), "dataset": ds.fingerprint()}))

    torch.manual_seed(config.seed)
    model = JEMC(model_config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    state: dict[str, Any] = {"identity": identity, "epoch": 0, "step": 0, "best_rsum": -1.0, "best_epoch": -1,
                             "loss_sum": 0.0, "loss_n": 0}
    if state_path.exists():
        saved = _read_state_meta(state_path)
        if saved.get("identity") != identity:
            diff = sorted(k for k in identity if saved.get("identity", {}).get(k) != identity[k])
            raise InputError(f"{run} | a run with different settings ({', '.join(diff)}) | expected the same settings to resume; pass --restart to discard it or choose another --out")
        state = _load_state(state_path, model, opt)
        if state["epoch"] >= config.epochs:
            echo(f"{out}: already trained ({state['epoch']} epochs, best rsum {state['best_rsum']:.1f} at epoch {state['best_epoch'] + 1})")
            return TrainResult(out, state["best_epoch"], state["best_rsum"], 0, run / LOG_FILE)
        echo(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step']}")
    _truncate_log(run / LOG_FILE, state["epoch"])

    feats_np, masks_np = ds.gather(train_split.videos, model_config.features)
    feats = {k: torch.from_numpy(v).to(device) for k, v in feats_np.items()}
    masks = {k: torch.from_numpy(v).to(device) for k, v in masks_np.items()}
    ids_np, lengths_np = vocab.encode_batch(train_split.captions)
    ids, lengths = torch.from_numpy(ids_np).to(device), torch.from_numpy(lengths_np).to(device)
    cap_video = torch.from_numpy(train_split.caption_video).to(device)
    n_caps = len(lengths)
    n_batches = (n_caps + config.batch_size - 1) // config.batch_size
    space_params = [list(sp.parameters()) for sp in model.spaces.values()]

    def step(rows: torch.Tensor) -> float:
        vids = cap_video[rows]
        f = {k: v[vids] for k, v in feats.items()}
        m = {k: v[vids] for k, v in masks.items()}
        lens = lengths[rows]
        tok = ids[rows, : int(lens.max())]
        total = torch.zeros((), device=device)
        for sp in model.spaces.values():
            v, a, present = sp.video_parts(f, m)
            if a is not None:
                total = total + ranking_loss(sp.fuse(v, a, present), sp.text(tok, lens), config.margin, loss_mode)
                if int(present.sum()) >= 2:  # the video-audio pair loss of a shared space
                    total = total + ranking_loss(v[present], a[present], config.margin, loss_mode)
            else:
                total = total + ranking_loss(v, sp.text(tok, lens), config.margin, loss_mode)
        opt.zero_grad(set_to_none=True)
        total.backward()
        for params in space_params:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        return float(total.detach())

    epochs_run = 0
    bar = _Progress(enabled=progress)
    with _deterministic(device), bar, _Interrupt() as interrupt:
        last_ckpt = time.monotonic()
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            for group in opt.param_groups:
                group["lr"] = config.lr * config.lr_gamma ** (epoch // config.lr_step)
            model.train()
            order = _epoch_order(n_caps, config.seed, epoch)
            bar.start_epoch(epoch, config.epochs, n_caps, done=min(state["step"] * config.batch_size, n_caps))
            t0, seen = time.perf_counter(), 0
            for b in range(state["step"], n_batches):
                rows = order[b * config.batch_size:(b + 1) * config.batch_size].to(device)
                if len(rows) >= 2:  # a single pair has no negatives
                    state["loss_sum"] += step(rows)
                    state["loss_n"] += len(rows)
                seen += len(rows)
                state["step"] = b + 1
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.advance(len(rows), state["loss_sum"] / max(state["loss_n"], 1), rate)
                if interrupt.requested:
                    _save_state(state_path, model, opt, state)
                    raise KeyboardInterrupt
                if time.monotonic() - last_ckpt >= config.checkpoint_seconds and b + 1 < n_batches:
                    _save_state(state_path, model, opt, state)
                    last_ckpt = time.monotonic()
            elapsed = time.perf_counter() - t0
            metrics = validate(model, vocab, ds)
            record = {"epoch": epoch, "lr": opt.param_groups[0]["lr"],
                      "loss": state["loss_sum"] / max(state["loss_n"], 1),
                      "captions_per_s": round(seen / max(elapsed, 1e-9), 1), "val": metrics}
            if metrics["rsum"] > state["best_rsum"]:
                state["best_rsum"], state["best_epoch"] = metrics["rsum"], epoch
                save_model(model, vocab, out, meta={"training": {
                    "preset": preset.name, "label": preset.label, "loss": str(loss_mode), "epoch": epoch,
                    "val": metrics, "config": config.identity(), "dataset": str(ds.path), "dataset_source": ds.source}})
            with open(run / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            state.update(epoch=epoch + 1, step=0, loss_sum=0.0, loss_n=0)
            _save_state(state_path, model, opt, state)
            last_ckpt = time.monotonic()
            epochs_run += 1
            bar.log(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  "
                    f"{record['captions_per_s']:.0f} captions/s  val rsum {metrics['rsum']:.1f}"
                    + ("  (best)" if state["best_epoch"] == epoch else ""), echo)
            if interrupt.requested:
                raise KeyboardInterrupt
    return TrainResult(out, state["best_epoch"], state["best_rsum"], epochs_run, run / LOG_FILE)


def _truncate_log(path: Path, epoch: int) -> None:
    """Drop log lines of epochs the resumed run will redo (written after the last checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln).get("epoch", 0) < epoch]
    if len(keep) != len(lines):
        write_file(path, lambda tmp: tmp.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8"))


class _Interrupt:
    """Ctrl-C during training: finish the current step, checkpoint, then stop (a second Ctrl-C
    stops at once). Interrupting inside ``optimizer.step()`` could checkpoint half-updated weights."""

    requested = False

    def __enter__(self) -> _Interrupt:
        self._old: Any = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _Progress:
    """A rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.0f} captions/s"),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"epoch {epoch + 1}/{epochs}", total=total, completed=done, loss=0.0, rate=0.0)

    def advance(self, n: int, loss: float, rate: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, loss=loss, rate=rate)

    def log(self, message: str, echo: Callable[[str], None]) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            echo(message)


def load_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``log.jsonl``."""
    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]

