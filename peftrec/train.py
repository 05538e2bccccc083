"""The Accelerate training loop and batched prediction.

Task-agnostic: the task supplies ``loss_fn(model, batch)`` and ``score_fn(model, batch)``; the runner
supplies validation and what to do when it improves. Only optimizer steps count as steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftrec.errors import PeftrecError

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]


@dataclass
class Throughput:
    """Samples and real (non-pad) tokens processed in ``seconds``."""

    seconds: float = 0.0
    samples: int = 0
    tokens: int = 0

    def add(self, batch: Batch) -> None:
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())

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
    """What the loop did: steps, the best validation, and training throughput (validation excluded)."""

    steps: int = 0
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    validations: list[dict[str, float]] = field(default_factory=list)
    throughput: Throughput = field(default_factory=Throughput)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)


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
    validate: Callable[[], dict[str, float]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    settings: TrainSettings,
    on_improve: Callable[[int, dict[str, float]], None] | None = None,
    after_optimizer_step: Callable[[int], None] | None = None,
) -> TrainOutcome:
    """Train the head for ``settings.max_steps`` optimizer steps, validating along the way.

    Args:
        model, train_loader, optimizer: already passed through ``accelerator.prepare``.
        loss_fn: the task's batch loss.
        validate: runs validation and returns its metrics (called on the main loop's schedule).
        scheduler: stepped once per optimizer step (not prepared, so it never double-steps).
        accelerator: carries gradient accumulation and mixed precision.
        settings: loop settings.
        on_improve: called with (step, metrics) when validation improves (e.g. save the adapter).
        after_optimizer_step: per-step hook of the head (AdaLoRA's rank allocation), called with the
            number of optimizer steps taken, after each optimizer step and before the gradients are cleared.

    Returns:
        The outcome, with the best step's trainable weights in ``best_state``.
    """
    outcome = TrainOutcome()
    bar = tqdm(
        total=settings.max_steps, desc="Training", unit="step", disable=not accelerator.is_main_process
    )
    running_loss, running_count = 0.0, 0
    epoch = 0
    start = time.perf_counter()
    while outcome.steps < settings.max_steps:
        model.train()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise PeftrecError(
                        f"the training loss became {loss.item()} at step {outcome.steps + 1}: lower "
                        "trainer.optimizer.lr, keep trainer.max_grad_norm set, or try trainer.precision=fp32"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                if after_optimizer_step is not None and accelerator.sync_gradients:
                    # Before zero_grad: AdaLoRA scores its ranks by |weight x gradient|.
                    after_optimizer_step(outcome.steps + 1)
                optimizer.zero_grad(set_to_none=True)
            outcome.throughput.add(batch)
            running_loss += loss.item()
            running_count += 1
            if not accelerator.sync_gradients:
                continue

            scheduler.step()
            outcome.steps += 1
            step = outcome.steps
            train_seconds = outcome.throughput.seconds + time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(
                loss=f"{running_loss / running_count:.4f}",
                samples_s=f"{outcome.throughput.samples / train_seconds:.1f}",
            )
            if step % settings.log_every == 0 or step == settings.max_steps:
                accelerator.log(
                    {
                        "train/loss": running_loss / running_count,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/epoch": epoch,
                    },
                    step=step,
                )
                running_loss, running_count = 0.0, 0

            if step % settings.eval_every == 0 or step == settings.max_steps:
                outcome.throughput.seconds += time.perf_counter() - start
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
                start = time.perf_counter()
            if step >= settings.max_steps:
                break
        epoch += 1
    bar.close()
    return outcome


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    score_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    accelerator: Accelerator,
    *,
    desc: str = "Evaluating",
) -> tuple[np.ndarray, Throughput]:
    """Score every row of a loader (one forward pass per batch).

    Args:
        model: prepared model.
        loader: evaluation loader (rows carry their ``index``).
        score_fn: the task's scoring function.
        accelerator: gathers across processes (each row counted once).
        desc: progress-bar label.

    Returns:
        ``(outputs, throughput)``: one output per row (a score, or a row of scores / item ids), in the
        dataset's original row order.
    """
    model.eval()
    indices, scores = [], []
    throughput = Throughput()
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not accelerator.is_main_process):
        batch_scores = score_fn(model, batch)
        index, batch_scores = accelerator.gather_for_metrics((batch["index"], batch_scores))
        throughput.add(batch)
        indices.append(index.cpu())
        scores.append(batch_scores.cpu())
    throughput.seconds = time.perf_counter() - start
    if not indices:
        return np.zeros(0, dtype=np.float64), throughput
    index = torch.cat(indices).numpy()
    values = torch.cat(scores)
    values = values.double() if values.is_floating_point() else values.long()
    ordered = np.empty((len(index), *values.shape[1:]), dtype=values.numpy().dtype)
    ordered[index] = values.numpy()
    return ordered, throughput


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
