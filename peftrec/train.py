"""The Accelerate training loop and batched prediction.

Task-agnostic: the task supplies ``loss_fn(model, batch)`` and ``score_fn(model, batch)``; the runner
supplies validation and what to do when it improves. Only optimizer steps count as steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftrec.errors import PeftrecError
from peftrec.record import MemoryMonitor

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]


@dataclass
class Throughput:
    """Samples, real (non-pad) tokens, and the positions whose logits the task reads, in ``seconds``.

    ``logit_positions`` counts what the loss or score reads through the output layer: one position per
    row for label-word tasks, the labelled tokens for token-level targets (the model FLOPs count,
    :mod:`peftrec.flops`, charges the vocabulary projection for these alone).
    """

    seconds: float = 0.0
    samples: int = 0
    tokens: int = 0
    logit_positions: int = 0

    def add(self, batch: Batch) -> None:
        """Count a batch now (reads the device; the loops use :class:`DeviceReadings` instead)."""
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())
        self.logit_positions += int(logit_positions(batch))

    def as_dict(self, prefix: str) -> dict[str, float]:
        rate = (lambda n: n / self.seconds) if self.seconds > 0 else (lambda n: float("nan"))
        return {
            f"{prefix}_seconds": round(self.seconds, 3),
            f"{prefix}_samples": self.samples,
            f"{prefix}_samples_per_s": round(rate(self.samples), 3),
            f"{prefix}_tokens_per_s": round(rate(self.tokens), 1),
        }


@dataclass
class TrainSettings:
    """Loop settings (see conf/trainer/default.yaml).

    Attributes:
        max_steps: optimizer steps to take.
        eval_every: validate every N steps; the last step is always validated.
        log_every: log the mean loss every N steps.
        max_grad_norm: clip the gradient norm to this (None: no clipping).
        select_metric: validation metric that picks the best step.
        higher_is_better: direction of ``select_metric``.
    """

    max_steps: int
    eval_every: int
    log_every: int
    max_grad_norm: float | None
    select_metric: str
    higher_is_better: bool


@dataclass
class TrainOutcome:
    """What the loop did: steps, the best validation, and training throughput (validation excluded).

    Also the loop's position (epoch, batches consumed in it) and running loss: with
    ``state_dict``/``load_state_dict`` it is registered for Accelerate's checkpoints, so a resumed run
    continues from the same batch with the same best step.
    """

    steps: int = 0
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    validations: list[dict[str, float]] = field(default_factory=list)
    throughput: Throughput = field(default_factory=Throughput)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0
    batches_in_epoch: int = 0
    running_loss: float = 0.0
    running_count: int = 0
    resumed_from_step: int | None = None
    last_checkpoint: str | None = None

    def state_dict(self) -> dict:
        """Everything but ``resumed_from_step`` (set when loading) and ``last_checkpoint``."""
        state = {k: v for k, v in vars(self).items() if k not in ("resumed_from_step", "last_checkpoint")}
        state["throughput"] = vars(self.throughput).copy()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict` (the loop then continues from its step and batch)."""
        for key, value in state.items():
            setattr(self, key, Throughput(**value) if key == "throughput" else value)
        self.resumed_from_step = self.steps


@dataclass
class CheckpointPlan:
    """When and how the loop saves resumable checkpoints.

    Attributes:
        every: save every N optimizer steps (0: only at the end); the last step always saves.
        save: writes a checkpoint for the given step and returns its folder (see
            :func:`peftrec.checkpoint.save_checkpoint`); called on every process.
        resume_from: a checkpoint folder to continue from (``accelerator.load_state``), or None.
        state_objects: more objects with ``state_dict``/``load_state_dict`` to save (the scheduler,
            the head's own training state), registered in this order.
    """

    every: int
    save: Callable[[int], Any]
    resume_from: Any = None
    state_objects: list = field(default_factory=list)


class DeviceReadings:
    """Per-batch numbers left on the device until the host needs them: each batch's loss, real tokens and
    logit positions.

    Reading a value off a GPU makes the host wait for all the work queued before it. Reading each batch's
    loss and token count as it came made the host wait at every step, so the next batch's collation and
    kernel launches never overlapped the GPU's work. The loop keeps them as tensors and reads them all in
    one transfer when it must: to log, validate, checkpoint, and at the end (the way torchtitan and
    Lightning defer their loss reads).
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []
        self._label_positions: list[torch.Tensor] = []
        self._row_positions = 0

    def add(self, batch: Batch, loss: torch.Tensor | None = None, step: int = 0) -> None:
        """Keep one batch's counts (and, in training, its loss at ``step``) without reading them."""
        self._tokens.append(batch["attention_mask"].sum())
        positions = logit_positions(batch)
        if isinstance(positions, torch.Tensor):
            self._label_positions.append(positions)
        else:
            self._row_positions += positions
        if loss is not None:
            self._steps.append(step)
            self._losses.append(loss.detach().reshape(()))

    def read(self) -> tuple[list[tuple[int, float]], int, int]:
        """Read what was kept since the last read, in one transfer, and forget it.

        Returns:
            ``(losses, tokens, logit_positions)``: each kept loss with its step, in order; the real
            tokens and the logit positions of every kept batch.
        """
        kept = (self._losses, self._tokens, self._label_positions)
        parts = [torch.stack(values).double() for values in kept if values]
        values = torch.cat(parts).tolist() if parts else []
        n_loss, n_tokens = len(self._losses), len(self._tokens)
        losses = list(zip(self._steps, values[:n_loss], strict=True))
        tokens = round(sum(values[n_loss : n_loss + n_tokens]))
        positions = round(sum(values[n_loss + n_tokens :])) + self._row_positions
        self._clear()
        return losses, tokens, positions


def logit_positions(batch: Batch) -> int | torch.Tensor:
    """Positions whose logits a task's loss or score reads: the labelled tokens of token-level targets
    (next-item titles), counted on the batch's device and not read, else one per row (the label word at
    the last position), known on the host."""
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2:
        return (labels != -100).sum()
    return int(batch["input_ids"].shape[0])


def over_all_processes(throughput: Throughput, accelerator: Accelerator) -> Throughput:
    """The samples and tokens of every process together (each counted its own shard of the batches),
    over the main process's time: the run's throughput, not one process's."""
    if accelerator.num_processes == 1:
        return throughput
    counts = torch.tensor(
        [throughput.samples, throughput.tokens, throughput.logit_positions], device=accelerator.device
    )
    samples, tokens, positions = accelerator.reduce(counts, reduction="sum").tolist()
    return Throughput(
        seconds=throughput.seconds, samples=int(samples), tokens=int(tokens), logit_positions=int(positions)
    )


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable parameters (the head: a few MB), to restore the best step."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`trainable_state` back into the model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _improved(value: float, best: float | None, higher_is_better: bool) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value > best if higher_is_better else value < best)


def train(
    model: torch.nn.Module,
    *,
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    train_loader: DataLoader,
    validate: Callable[[], dict[str, float]] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    settings: TrainSettings,
    on_improve: Callable[[int, dict[str, float]], None] | None = None,
    after_optimizer_step: Callable[[int], None] | None = None,
    checkpoints: CheckpointPlan | None = None,
    memory: MemoryMonitor | None = None,
) -> TrainOutcome:
    """Train the head for ``settings.max_steps`` optimizer steps, validating along the way.

    Args:
        model, train_loader, optimizer: already passed through ``accelerator.prepare``.
        loss_fn: the task's batch loss.
        validate: runs validation and returns its metrics (called on the main loop's schedule); None:
            no validation (a timing run), so no best step is chosen and the last weights are the model's.
        scheduler: stepped once per optimizer step (not prepared, so it never double-steps).
        accelerator: carries gradient accumulation and mixed precision.
        settings: loop settings.
        on_improve: called with (step, metrics) when validation improves (e.g. save the adapter).
        after_optimizer_step: per-step hook of the head (AdaLoRA's rank allocation), called with the
            number of optimizer steps taken, after each optimizer step and before the gradients are cleared.
        checkpoints: resumable checkpoints to write (and one to resume from); None: none.
        memory: sampled after every optimizer step (peak and average memory of the phase).

    Returns:
        The outcome, with the best step's trainable weights in ``best_state``.

    Raises:
        PeftrecError: the loss became NaN/inf (the last good checkpoint is kept and named), or the
            device ran out of memory (the message names the knobs that lower it).
    """
    outcome = TrainOutcome()
    if checkpoints is not None:
        accelerator.register_for_checkpointing(scheduler, outcome, *checkpoints.state_objects)
        if checkpoints.resume_from is not None:
            accelerator.load_state(str(checkpoints.resume_from))
            outcome.last_checkpoint = str(checkpoints.resume_from)
            log.info("Resumed from %s at step %d", checkpoints.resume_from, outcome.steps)
    bar = tqdm(
        total=settings.max_steps,
        initial=outcome.steps,
        desc="Training",
        unit="step",
        disable=not accelerator.is_main_process,
    )
    readings = DeviceReadings()
    shown: dict[str, str] = {}  # the progress bar's loss and speed
    # Clipping walks the list it is given at every step: the head's few tensors, not the frozen model's
    # hundreds (whose gradients are None): about 2 against 0.5 ms of host time a clip for LoRA on the
    # default model (benchmarks/scripts/clip_host_time.py, 2-core CPU).
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    while outcome.steps < settings.max_steps:
        model.train()
        # The epoch seeds the batch order (see batching.EpochLengthGroupedSampler); a resumed run
        # skips the batches its checkpoint had already consumed in this epoch.
        train_loader.set_epoch(outcome.epoch)
        loader = (
            accelerator.skip_first_batches(train_loader, outcome.batches_in_epoch)
            if outcome.batches_in_epoch
            else train_loader
        )
        for batch in loader:
            outcome.batches_in_epoch += 1
            with accelerator.accumulate(model), _out_of_memory_names_the_knobs("training", batch):
                loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
                if after_optimizer_step is not None and accelerator.sync_gradients:
                    # Before zero_grad: AdaLoRA scores its ranks by |weight x gradient|.
                    after_optimizer_step(outcome.steps + 1)
                optimizer.zero_grad(set_to_none=True)
            outcome.throughput.samples += int(batch["input_ids"].shape[0])
            readings.add(batch, loss, step=outcome.steps + 1)
            if not accelerator.sync_gradients:
                continue

            scheduler.step()
            if memory is not None:
                memory.step()
            outcome.steps += 1
            step = outcome.steps
            last = step >= settings.max_steps
            logging_now = step % settings.log_every == 0 or last
            validating = validate is not None and (step % settings.eval_every == 0 or last)
            checkpointing = checkpoints is not None and (
                last or bool(checkpoints.every and step % checkpoints.every == 0)
            )
            if logging_now or validating or checkpointing:
                # The host waits for the device here and nowhere else in the step. A loss that is not
                # finite stops the run before anything is validated or checkpointed after it.
                _take_readings(readings, outcome)
            outcome.throughput.seconds += time.perf_counter() - start
            if outcome.running_count:  # the mean since the last log, as of the last reading
                shown["loss"] = f"{outcome.running_loss / outcome.running_count:.4f}"
            shown["samples_s"] = f"{outcome.throughput.samples / max(outcome.throughput.seconds, 1e-9):.1f}"
            bar.update(1)
            # refresh=False: update() redraws at its own pace; a redraw each step costs host time.
            bar.set_postfix(shown, refresh=False)
            if logging_now:
                accelerator.log(
                    {
                        "train/loss": outcome.running_loss / outcome.running_count,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/epoch": outcome.epoch,
                    },
                    step=step,
                )
                outcome.running_loss, outcome.running_count = 0.0, 0

            if validating:
                _validate(model, validate, accelerator, settings, outcome, on_improve)
            if checkpointing:
                outcome.last_checkpoint = str(checkpoints.save(step))
            start = time.perf_counter()  # logging, validation and checkpoints are not training time
            if last:
                break
        else:
            outcome.epoch += 1
            outcome.batches_in_epoch = 0
    bar.close()
    return outcome


def _take_readings(readings: DeviceReadings, outcome: TrainOutcome) -> None:
    """Read the kept losses and counts into the outcome; stop at the first loss that is not finite."""
    losses, tokens, positions = readings.read()
    for step, value in losses:
        if not math.isfinite(value):
            raise PeftrecError(_diverged_message(value, step, outcome))
        outcome.running_loss += value
        outcome.running_count += 1
    outcome.throughput.tokens += tokens
    outcome.throughput.logit_positions += positions


def _validate(
    model: torch.nn.Module,
    validate: Callable[[], dict[str, float]],
    accelerator: Accelerator,
    settings: TrainSettings,
    outcome: TrainOutcome,
    on_improve: Callable[[int, dict[str, float]], None] | None,
) -> None:
    step = outcome.steps
    metrics = validate()
    model.train()
    outcome.validations.append({"step": step, **metrics})
    accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
    value = metrics[settings.select_metric]
    best = outcome.best_metrics.get(settings.select_metric)
    log.info("step %d: validation %s", step, _fmt(metrics))
    if _improved(value, best, settings.higher_is_better):
        outcome.best_step, outcome.best_metrics = step, metrics
        outcome.best_state = trainable_state(model)
        if on_improve is not None:
            on_improve(step, metrics)


def _diverged_message(value: float, step: int, outcome: TrainOutcome) -> str:
    kept = (
        f" The checkpoints written before it are kept (the last: {outcome.last_checkpoint})."
        if outcome.last_checkpoint
        else ""
    )
    return (
        f"the training loss became {value} at step {step}: lower trainer.optimizer.lr, keep "
        f"trainer.max_grad_norm set, or try trainer.precision=fp32, and start the run again.{kept}"
    )


@contextlib.contextmanager
def _out_of_memory_names_the_knobs(phase: str, batch: Batch) -> Iterator[None]:
    """Turn a device out-of-memory error into a message that says which settings lower memory."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        rows, length = batch["input_ids"].shape
        knobs = (
            "lower trainer.batch_size (and raise trainer.grad_accum to keep the effective batch), set "
            "model.gradient_checkpointing=true (model.gradient_checkpointing_every=4 checkpoints a quarter of the "
            "layers, for a quarter of the recomputation), or load the base in 4-bit (model.quantization=4bit, as "
            "recipe=qlora_click does)"
            if phase == "training"
            else "lower trainer.eval_batch_size (for beam search also task.num_beams)"
        )
        raise PeftrecError(
            f"out of memory during {phase} on a batch of {rows} rows x {length} tokens: {knobs}; "
            "task.max_length caps the longest prompt"
        ) from err


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    score_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    accelerator: Accelerator,
    *,
    desc: str = "Evaluating",
    memory: MemoryMonitor | None = None,
) -> tuple[np.ndarray, Throughput]:
    """Score every row of a loader (one forward pass per batch).

    Args:
        model: prepared model.
        loader: evaluation loader (rows carry their ``index``).
        score_fn: the task's scoring function.
        accelerator: gathers across processes (each row counted once).
        desc: progress-bar label.
        memory: sampled after every batch.

    Returns:
        ``(outputs, throughput)``: one output per row (a score, or a row of scores / item ids), in the
        dataset's original row order.
    """
    model.eval()
    indices, scores = [], []
    throughput = Throughput()
    readings = DeviceReadings()
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not accelerator.is_main_process):
        with _out_of_memory_names_the_knobs("evaluation", batch):
            batch_scores = score_fn(model, batch)
        index, batch_scores = accelerator.gather_for_metrics((batch["index"], batch_scores))
        readings.add(batch)
        if memory is not None:
            memory.step()
        # Kept on the device: one transfer at the end rather than a wait for the device every batch.
        indices.append(index)
        scores.append(batch_scores)
    index = torch.cat(indices).cpu().numpy() if indices else np.zeros(0, dtype=np.int64)
    values = torch.cat(scores).cpu() if scores else None
    _, throughput.tokens, throughput.logit_positions = readings.read()
    throughput.seconds = time.perf_counter() - start
    throughput = over_all_processes(throughput, accelerator)
    # Rows scored: the gathered ones, without the padding that evened out the last batch across processes.
    throughput.samples = len(index)
    if values is None:
        return np.zeros(0, dtype=np.float64), throughput
    values = values.double() if values.is_floating_point() else values.long()
    ordered = np.empty((len(index), *values.shape[1:]), dtype=values.numpy().dtype)
    ordered[index] = values.numpy()
    return ordered, throughput


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
