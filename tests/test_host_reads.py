"""The training and evaluation loops read device values on the host only when they must.

On a GPU, reading a value (``.item()``, ``bool()``, ``.tolist()``, ``.cpu()``) makes the host wait for
all the work queued before it, so a read at every step stops the next batch's collation and launches
from overlapping the device's work. A CPU has no queue to wait for, so these tests mark the batches as
device data (peftrec.host_reads), which logs every host read of them or of anything computed from them.
"""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from test_resume import train_on_cpu

from peftrec.errors import PeftrecError
from peftrec.host_reads import DeviceMarked, HostReadLog, mark, recording_host_reads
from peftrec.train import DeviceReadings, TrainSettings, predict


@pytest.fixture
def log():
    """The host reads of the test; the loss and score functions below advance its step."""
    with recording_host_reads() as log:
        yield log


def reads(log: HostReadLog, site: str = "peftrec/train.py") -> list[tuple[int, str]]:
    """``(step, operation)`` of each read, all of which must come from ``site``."""
    assert {where.split(":")[0] for _, _, where in log.reads} <= {site}, log.reads
    return [(step, op) for step, op, _ in log.reads]


def device_batches(n: int, rows: int = 2, length: int = 4) -> list[dict[str, torch.Tensor]]:
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, -1] = 0  # one pad token per batch: rows x length - 1 real tokens
    return [
        mark(
            {
                "input_ids": torch.ones(rows, length, dtype=torch.long),
                "attention_mask": mask,
                "index": torch.arange(i * rows, (i + 1) * rows),
            }
        )
        for i in range(n)
    ]


def counting_loss(losses: dict[int, float] | None = None):
    """A loss over the batch's ids (1 per id, times the weight); ``losses`` overrides it per micro-batch."""

    def loss_fn(model, batch):
        DeviceMarked.log.step += 1
        loss = model(batch["input_ids"].float()).mean()
        if losses and DeviceMarked.log.step in losses:
            loss = loss * 0 + losses[DeviceMarked.log.step]
        return loss

    return loss_fn


def test_training_reads_the_device_only_at_log_steps(log):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    outcome = train_on_cpu(
        model,
        device_batches(3),
        counting_loss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        TrainSettings(
            max_steps=8,
            eval_every=8,
            log_every=4,
            max_grad_norm=1.0,
            select_metric="auc",
            higher_is_better=True,
        ),
        validate=None,
    )
    # One transfer at step 4, one at step 8 (the last): the losses and token counts of four steps each.
    assert reads(log) == [(4, "tolist"), (8, "tolist")]
    assert outcome.steps == 8
    assert (outcome.throughput.samples, outcome.throughput.tokens, outcome.throughput.logit_positions) == (
        16,
        8 * 7,
        16,
    )


def test_validation_and_checkpoint_steps_read_the_device_first(log):
    model = torch.nn.Linear(4, 1)
    seen_at_validation = []

    def validate():
        seen_at_validation.append(reads(log))
        return {"auc": 0.5}

    train_on_cpu(
        model,
        device_batches(3),
        counting_loss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        TrainSettings(
            6, eval_every=3, log_every=100, max_grad_norm=None, select_metric="auc", higher_is_better=True
        ),
        validate=validate,
    )
    # Validation comes after the reading of every step before it, so it never sees a step unchecked.
    assert seen_at_validation == [[(3, "tolist")], [(3, "tolist"), (6, "tolist")]]


def test_a_loss_that_is_not_finite_is_named_by_its_step_though_read_later(log):
    model = torch.nn.Linear(4, 1)
    with pytest.raises(
        PeftrecError, match=r"the training loss became nan at step 3: lower trainer.optimizer.lr"
    ):
        train_on_cpu(
            model,
            device_batches(3),
            counting_loss({3: math.nan, 4: math.inf}),
            torch.optim.SGD(model.parameters(), lr=0.1),
            TrainSettings(
                10, eval_every=10, log_every=5, max_grad_norm=1.0, select_metric="auc", higher_is_better=True
            ),
            validate=None,
        )
    assert reads(log) == [(5, "tolist")]  # found at the first reading, step 5


def test_gradient_accumulation_keeps_each_micro_batch_loss_under_its_optimizer_step():
    readings = DeviceReadings()
    batch = {
        "input_ids": torch.ones(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
    }
    labels = torch.tensor([[-100, 5, 6], [-100, -100, 7]])
    readings.add(batch, torch.tensor(1.5), step=1)
    readings.add(batch | {"labels": labels}, torch.tensor(2.5), step=1)
    readings.add(batch, torch.tensor(0.5), step=2)
    assert readings.read() == ([(1, 1.5), (1, 2.5), (2, 0.5)], 18, 2 + 3 + 2)
    assert readings.read() == ([], 0, 0)  # forgotten once read


def test_prediction_reads_the_device_once_and_keeps_the_row_order(log):
    batches = device_batches(3, rows=2)
    for batch in batches:  # longest-first loaders hand rows out of order
        batch["index"] = batch["index"].flip(0)

    def score_fn(model, batch):
        DeviceMarked.log.step += 1
        return batch["index"].float() * 10

    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    try:
        accelerator = Accelerator(cpu=True)
        outputs, throughput = predict(torch.nn.Identity(), accelerator.prepare(loader), score_fn, accelerator)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert outputs.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert (throughput.samples, throughput.tokens) == (6, 3 * 7)
    # The indices, the scores and the token counts: three transfers after the last batch, none before.
    assert reads(log) == [(3, "cpu"), (3, "cpu"), (3, "tolist")]
