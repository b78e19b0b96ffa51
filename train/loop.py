"""The training loop: Adam, step decay, hardest-negative ranking losses, best-rsum checkpoint.

A run trains the bundle ``out`` and keeps its state next to it in ``<out>.run/``:

- ``state.safetensors`` — model and optimizer tensors, with the run's JSON state (epoch, step,
  best rsum, the exact settings) in the file's metadata: one file, replaced atomically, so a
  kill at any moment leaves a consistent checkpoint;
- ``vocab.json`` — the vocabulary built from the training captions;
- ``log.jsonl`` — one JSON line per epoch (loss, rate, validation metrics).

Rerunning the same training resumes where the last checkpoint (every epoch, and every
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jemc_infer.atomic import write_file
from jemc_infer.config import LossMode, ModelConfig, TextPooling
from jemc_infer.errors import InputError, RunConflictError
from jemc_infer.nn import JEMC, resolve_device, save_model
from jemc_infer.text import Vocabulary
from jemc_infer.train.data import DATASET_FILE, FeatureDataset, Split, open_dataset
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
    text_confidence: float = 0.0  # ModelConfig.text_confidence: weigh each space's cosine by its text state's norm to this power
    text_pooling: str = TextPooling.LAST  # ModelConfig.text_pooling: the GRU's last state (the paper) or its maximum over the words
    min_count: int = 4  # vocabulary threshold
    seed: int = 0
    checkpoint_seconds: float = 120.0  # also checkpoint within an epoch this often
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"; bit-exact only on the CPU

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share (epochs may grow; checkpointing may change)."""
        d = dataclasses.asdict(self)
        for k in ("epochs", "checkpoint_seconds", "device"):
            d.pop(k)
        if d["text_pooling"] == TextPooling.LAST:  # runs started before the setting existed still resume
            del d["text_pooling"]
        else:
            d["text_pooling"] = str(d["text_pooling"])
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
        raise RunConflictError(path, f"unreadable checkpoint ({type(err).__name__})", "a training state") from None


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


def _open_training_data(data: Path | str, preset: Preset) -> FeatureDataset:
    """The dataset, checked to have the preset's features and captioned train and val splits."""
    ds = open_dataset(data)
    _check_features(preset, ds)
    for split in ("train", "val"):
        if split not in ds.splits or not ds.split(split).captions:
            raise InputError(f"{ds.path / DATASET_FILE} | no {split!r} split with captions (has {sorted(ds.splits)}) | expected 'train' and 'val' splits")
    return ds


def _prepare_run_dir(run: Path, restart: bool) -> Path:
    """The run directory, emptied first when restarting (only if it really is a run directory)."""
    if restart and run.exists():
        if not (run / STATE_FILE).exists() and any(run.iterdir()):
            raise InputError(f"{run} | not a training run directory | expected {STATE_FILE} inside before deleting it")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def _run_vocabulary(run: Path, captions: tuple[str, ...], min_count: int) -> Vocabulary:
    """A resumed run's vocabulary, or a new one built from the training captions (and saved)."""
    if (run / STATE_FILE).exists():
        return Vocabulary.load(run / VOCAB_FILE)
    vocab = Vocabulary.build(captions, min_count=min_count)
    write_file(run / VOCAB_FILE, vocab.save)
    return vocab


def _new_state(identity: dict[str, Any]) -> dict[str, Any]:
    return {"identity": identity, "epoch": 0, "step": 0, "best_rsum": -1.0, "best_epoch": -1, "loss_sum": 0.0, "loss_n": 0}


def _resume(run: Path, identity: dict[str, Any], model: JEMC, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Load the run's checkpoint into ``model`` and ``opt``; None when there is none yet.

    Raises:
        RunConflictError: The checkpoint is unreadable or was made with other settings.
    """
    state_path = run / STATE_FILE
    if not state_path.exists():
        return None
    saved = _read_state_meta(state_path)
    if saved.get("identity") != identity:
        diff = tuple(sorted(k for k in identity if saved.get("identity", {}).get(k) != identity[k]))
        raise RunConflictError(run, f"a run with different settings ({', '.join(diff)})", "the same settings to resume", diff)
    return _load_state(state_path, model, opt)


@dataclass(frozen=True)
class _TrainingSet:
    """The training split on the device: features and masks per video, token ids per caption."""

    feats: dict[str, torch.Tensor]  # name → float32 [n_videos, dim]
    masks: dict[str, torch.Tensor]  # name → bool [n_videos]
    ids: torch.Tensor  # int64 [n_captions, max_len]
    lengths: torch.Tensor  # int64 [n_captions]
    caption_video: torch.Tensor  # int64 [n_captions]: row of each caption's video

    @classmethod
    def load(cls, ds: FeatureDataset, split: Split, vocab: Vocabulary, features: tuple[str, ...],
             device: torch.device) -> _TrainingSet:
        feats, masks = ds.gather(split.videos, features)
        ids, lengths = vocab.encode_batch(split.captions)
        return cls({k: torch.from_numpy(v).to(device) for k, v in feats.items()},
                   {k: torch.from_numpy(v).to(device) for k, v in masks.items()},
                   torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device),
                   torch.from_numpy(split.caption_video).to(device))

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class _Trainer:
    """The epochs of one run: batches in a per-epoch seeded order, a checkpoint every epoch and
    every ``checkpoint_seconds``, then validation, the best model as the bundle, and a log line."""

    model: JEMC
    opt: torch.optim.Optimizer
    config: TrainConfig
    loss_mode: LossMode
    data: _TrainingSet
    state: dict[str, Any]  # what a checkpoint saves: epoch, step, best so far, running loss
    device: torch.device
    run: Path  # the run directory
    out: Path  # the bundle (the best epoch's model)
    preset: Preset
    vocab: Vocabulary
    ds: FeatureDataset  # for validation
    last_checkpoint: float = field(default_factory=time.monotonic)

    @property
    def n_batches(self) -> int:
        return (len(self.data) + self.config.batch_size - 1) // self.config.batch_size

    def checkpoint(self) -> None:
        _save_state(self.run / STATE_FILE, self.model, self.opt, self.state)
        self.last_checkpoint = time.monotonic()

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        """The summed ranking losses of every space on the captions ``rows`` and their videos."""
        d, margin, mode = self.data, self.config.margin, self.loss_mode
        vids = d.caption_video[rows]
        f = {k: v[vids] for k, v in d.feats.items()}
        m = {k: v[vids] for k, v in d.masks.items()}
        lens = d.lengths[rows]
        tok = d.ids[rows, : int(lens.max())]
        total = torch.zeros((), device=self.device)
        for sp in self.model.spaces.values():
            v, a, present = sp.video_parts(f, m)
            if a is not None:
                total = total + ranking_loss(sp.fuse(v, a, present), sp.text(tok, lens), margin, mode)
                if int(present.sum()) >= 2:  # the video-audio pair loss of a shared space
                    total = total + ranking_loss(v[present], a[present], margin, mode)
            else:
                total = total + ranking_loss(v, sp.text(tok, lens), margin, mode)
        return total

    def step(self, rows: torch.Tensor) -> float:
        """One optimizer step on a batch; returns its loss."""
        total = self.loss(rows)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        for sp in self.model.spaces.values():  # spaces train independently: clip each on its own
            torch.nn.utils.clip_grad_norm_(list(sp.parameters()), self.config.grad_clip)
        self.opt.step()
        return float(total.detach())

    def train_epoch(self, bar: _Progress, interrupt: _Interrupt) -> tuple[int, float]:
        """The rest of the current epoch from ``state["step"]``; returns (captions seen, seconds).

        Raises:
            KeyboardInterrupt: After checkpointing, when Ctrl-C was pressed.
        """
        config, state, epoch, n = self.config, self.state, self.state["epoch"], len(self.data)
        for group in self.opt.param_groups:
            group["lr"] = config.lr * config.lr_gamma ** (epoch // config.lr_step)
        self.model.train()
        order = _epoch_order(n, config.seed, epoch)
        bar.start_epoch(epoch, config.epochs, n, done=min(state["step"] * config.batch_size, n))
        t0, seen = time.perf_counter(), 0
        for b in range(state["step"], self.n_batches):
            rows = order[b * config.batch_size:(b + 1) * config.batch_size].to(self.device)
            if len(rows) >= 2:  # a single pair has no negatives
                state["loss_sum"] += self.step(rows)
                state["loss_n"] += len(rows)
            seen += len(rows)
            state["step"] = b + 1
            bar.advance(len(rows), state["loss_sum"] / max(state["loss_n"], 1), seen / max(time.perf_counter() - t0, 1e-9))
            if interrupt.requested:
                self.checkpoint()
                raise KeyboardInterrupt
            if time.monotonic() - self.last_checkpoint >= config.checkpoint_seconds and b + 1 < self.n_batches:
                self.checkpoint()
        return seen, time.perf_counter() - t0

    def end_epoch(self, seen: int, elapsed: float) -> dict[str, Any]:
        """Validate, keep the model as the bundle if it is the best so far, log and checkpoint.

        Returns:
            The epoch's log record.
        """
        state, epoch = self.state, self.state["epoch"]
        metrics = validate(self.model, self.vocab, self.ds)
        record = {"epoch": epoch, "lr": self.opt.param_groups[0]["lr"], "loss": state["loss_sum"] / max(state["loss_n"], 1),
                  "captions_per_s": round(seen / max(elapsed, 1e-9), 1), "val": metrics}
        if metrics["rsum"] > state["best_rsum"]:
            state["best_rsum"], state["best_epoch"] = metrics["rsum"], epoch
            save_model(self.model, self.vocab, self.out, meta={"training": {
                "preset": self.preset.name, "label": self.preset.label, "loss": str(self.loss_mode), "epoch": epoch,
                "val": metrics, "config": self.config.identity(), "dataset": str(self.ds.path), "dataset_source": self.ds.source}})
        with open(self.run / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        state.update(epoch=epoch + 1, step=0, loss_sum=0.0, loss_n=0)
        self.checkpoint()
        return record

    def fit(self, progress: bool, echo: Callable[[str], None]) -> int:
        """Train up to ``config.epochs``; returns the number of epochs trained.

        Raises:
            KeyboardInterrupt: After checkpointing, when Ctrl-C was pressed.
        """
        epochs_run = 0
        bar = _Progress(enabled=progress)
        with _deterministic(self.device), bar, _Interrupt() as interrupt:
            self.last_checkpoint = time.monotonic()
            while self.state["epoch"] < self.config.epochs:
                seen, elapsed = self.train_epoch(bar, interrupt)
                record = self.end_epoch(seen, elapsed)
                epochs_run += 1
                best = "  (best)" if self.state["best_epoch"] == record["epoch"] else ""
                if progress:  # quiet runs keep the lines in the run's log only
                    bar.log(f"epoch {record['epoch'] + 1}/{self.config.epochs}  loss {record['loss']:.4f}  "
                            f"{record['captions_per_s']:.0f} captions/s  val rsum {record['val']['rsum']:.1f}{best}", echo)
                if interrupt.requested:
                    raise KeyboardInterrupt
        return epochs_run


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
        progress: Show a progress bar (on stderr) and a line per epoch.
        echo: Where one-line status messages go.

    Returns:
        What was trained and where it is.

    Raises:
        InputError: Bad data, or a preset the data cannot feed.
        RunConflictError: A run with other settings (or an unreadable checkpoint) in the way:
            restart it or train into another bundle.
    """
    out = Path(out)
    preset = get_preset(preset) if isinstance(preset, str) else preset
    device = resolve_device(config.device)
    ds = _open_training_data(data, preset)
    loss_mode = LossMode(config.loss or preset.loss)
    run = _prepare_run_dir(run_dir_for(out), restart)
    train_split = ds.split("train")
    vocab = _run_vocabulary(run, train_split.captions, config.min_count)
    model_config = ModelConfig(
        spaces=preset.spaces, vocab_size=len(vocab),
        feature_dims={f: ds.feature_dims[f] for f in preset.features},
        word_dim=config.word_dim, embed_dim=config.embed_dim, text_confidence=config.text_confidence,
        text_pooling=config.text_pooling,
    )
    identity = json.loads(json.dumps({  # in its JSON form, as it is compared with a saved one
        "format": STATE_FORMAT, "preset": preset.name, "train": config.identity(),
        "model": model_config.to_json(), "dataset": ds.fingerprint()}))

    torch.manual_seed(config.seed)
    model = JEMC(model_config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    state = _resume(run, identity, model, opt)
    if state is None:
        state = _new_state(identity)
    elif state["epoch"] >= config.epochs:
        echo(f"{out}: already trained ({state['epoch']} epochs, best rsum {state['best_rsum']:.1f} at epoch {state['best_epoch'] + 1})")
        return TrainResult(out, state["best_epoch"], state["best_rsum"], 0, run / LOG_FILE)
    else:
        echo(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step']}")
    _truncate_log(run / LOG_FILE, state["epoch"])

    data_on_device = _TrainingSet.load(ds, train_split, vocab, model_config.features, device)
    trainer = _Trainer(model, opt, config, loss_mode, data_on_device, state, device, run, out, preset, vocab, ds)
    epochs_run = trainer.fit(progress, echo)
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

