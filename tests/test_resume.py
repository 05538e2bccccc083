"""Checkpoints and resume: a run killed with SIGKILL continues to exactly the result of an uninterrupted run.

The runs are the real entry point in subprocesses (tiny random model, toy CSV data), as in test_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import peftrec, toy_overrides

from peftrec.checkpoint import CHECKPOINTS, INFO_FILE, find_checkpoint, list_checkpoints
from peftrec.config_fingerprint import config_fingerprint
from peftrec.errors import PeftrecError
from peftrec.train import TrainOutcome, TrainSettings, train

# Long enough to be killed mid-way, over epochs (the toy data: 608 rows / 16 per batch = 38 steps an epoch).
RESUMABLE = (
    "trainer.max_steps=100",
    "trainer.eval_every=25",
    "trainer.checkpoint_every=10",
    "trainer.keep_checkpoints=3",
    "trainer.batch_size=16",
    "trainer.optimizer.lr=2e-2",
)


def start(overrides: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PEFTREC_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PEFTREC_CACHE": str(cwd / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "peftrec", *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_after_checkpoint(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL the run as soon as its checkpoint of ``step`` is complete (renamed into place)."""
    target = run_dir / CHECKPOINTS / f"step_{step:07d}"
    deadline = time.monotonic() + timeout
    while not target.is_dir():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"no checkpoint {target} within {timeout} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize(
    "head",
    [
        # LoRA with dropout: the resumed run must restore the RNG state to draw the same masks.
        ("peft=lora", "peft.lora_dropout=0.1"),
        # AdaLoRA: its rank allocator's importance averages live outside the weights.
        ("peft=adalora", "peft.tinit=10", "peft.tfinal=30", "peft.deltaT=5"),
    ],
    ids=["lora", "adalora"],
)
def test_a_killed_run_resumes_to_the_result_of_an_uninterrupted_run(tiny_model_dir, toy_csv, tmp_path, head):
    def overrides(run_dir: Path, *extra: str) -> list[str]:
        return toy_overrides(tiny_model_dir, toy_csv, run_dir, *RESUMABLE, *head, *extra)

    full_dir = tmp_path / "uninterrupted"
    proc = peftrec(*overrides(full_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed_dir = tmp_path / "outputs" / "killed"
    killed = start(overrides(killed_dir), cwd=tmp_path)
    kill_after_checkpoint(killed, killed_dir, step=40)
    assert killed.returncode == -signal.SIGKILL
    assert not (killed_dir / "result.json").exists()
    assert [p.name for p in list_checkpoints(killed_dir / CHECKPOINTS)][-1] >= "step_0000040"
    # No staging folder is ever mistaken for a checkpoint.
    assert all(p.name.startswith("step_") for p in list_checkpoints(killed_dir / CHECKPOINTS))

    # A new run folder beside the killed one (outputs/<recipe>/<time> in real use); auto finds the checkpoint.
    resumed_dir = tmp_path / "outputs" / "resumed"
    proc = peftrec(*overrides(resumed_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = json.loads((full_dir / "result.json").read_text())
    resumed = json.loads((resumed_dir / "result.json").read_text())
    resumed_step = int(Path(resumed["resumed_from"]).name.removeprefix("step_"))
    assert Path(resumed["resumed_from"]).parent.parent == killed_dir and 40 <= resumed_step < 100

    # Same batches, dropout masks, optimizer moments and schedule: the same numbers (CPU fp32 is deterministic).
    assert resumed["validations"] == full["validations"]
    assert resumed["best_step"] == full["best_step"]
    for name, value in full["metrics"]["test"].items():
        assert resumed["metrics"]["test"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    if "adalora" in head[0]:
        assert resumed["head"]["rank_pattern"] == full["head"]["rank_pattern"]
    # The adapter of the resumed run is the best step's, like the uninterrupted run's.
    from safetensors.torch import load_file

    a = load_file(full_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-8)
    # The last keep_checkpoints checkpoints are kept, the final step among them.
    kept = [p.name for p in list_checkpoints(resumed_dir / CHECKPOINTS)]
    assert kept == ["step_0000080", "step_0000090", "step_0000100"]


def test_resume_auto_starts_afresh_without_a_checkpoint_and_ignores_finished_runs(
    tiny_model_dir, toy_csv, tmp_path
):
    steps = ("trainer.max_steps=6", "trainer.eval_every=3", "trainer.checkpoint_every=3")
    first = tmp_path / "outputs" / "first"
    proc = peftrec(
        *toy_overrides(tiny_model_dir, toy_csv, first, *steps, "trainer.resume=auto"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((first / "result.json").read_text())["resumed_from"] is None
    # The first run finished: a second auto run of the same config does not "resume" it.
    second = tmp_path / "outputs" / "second"
    proc = peftrec(
        *toy_overrides(tiny_model_dir, toy_csv, second, *steps, "trainer.resume=auto"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((second / "result.json").read_text())["resumed_from"] is None


def test_resume_from_a_checkpoint_of_another_config_is_refused(tiny_model_dir, toy_csv, tmp_path):
    first = tmp_path / "first"
    steps = ("trainer.max_steps=4", "trainer.eval_every=2")
    proc = peftrec(*toy_overrides(tiny_model_dir, toy_csv, first, *steps), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = toy_overrides(
        tiny_model_dir, toy_csv, tmp_path / "other", *steps, "peft.r=4", f"trainer.resume={first}"
    )
    proc = peftrec(*other, cwd=tmp_path)
    assert proc.returncode == 2
    assert "was written by a different config" in proc.stderr and "peftrec: error:" in proc.stderr


def test_a_diverging_loss_stops_with_a_failed_record_and_keeps_the_last_checkpoint(
    tiny_model_dir, toy_csv, tmp_path
):
    run_dir = tmp_path / "diverged"
    overrides = toy_overrides(
        tiny_model_dir,
        toy_csv,
        run_dir,
        "trainer.max_steps=20",
        "trainer.eval_every=20",
        "trainer.checkpoint_every=1",
        "trainer.warmup_ratio=0",
        "trainer.optimizer.lr=inf",  # the first update makes the head's weights inf/NaN
    )
    proc = peftrec(*overrides, cwd=tmp_path)
    assert proc.returncode == 2
    assert "the training loss became" in proc.stderr and "lower trainer.optimizer.lr" in proc.stderr
    assert "The checkpoints written before it are kept (the last: " in proc.stderr
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed" and "the training loss became" in record["error"]
    assert record["checkpoints"] and all(name.startswith("step_") for name in record["checkpoints"])
    assert (run_dir / CHECKPOINTS / record["checkpoints"][-1] / INFO_FILE).is_file()


def test_fingerprint_ignores_only_checkpoint_and_resume_keys():
    base = {
        "model": {"name": "m"},
        "trainer": {"lr": 1e-3, "resume": None, "checkpoint_every": 50},
        "seed": 0,
    }
    same = {
        **base,
        "trainer": {**base["trainer"], "resume": "auto", "checkpoint_every": 10, "keep_checkpoints": 5},
    }
    assert config_fingerprint(base) == config_fingerprint(same)
    assert config_fingerprint(base) != config_fingerprint({**base, "seed": 1})
    assert config_fingerprint(base) != config_fingerprint(
        {**base, "trainer": {**base["trainer"], "lr": 2e-3}}
    )


def test_find_checkpoint_follows_the_resume_setting(tmp_path):
    run = tmp_path / "outputs" / "first"
    run.mkdir(parents=True)
    assert find_checkpoint(None, run, "abc") is None
    assert find_checkpoint("auto", run, "abc") is None
    with pytest.raises(PeftrecError, match="no checkpoint there"):
        find_checkpoint(str(run), run, "abc")
    # An unfinished staging folder, or one without its info file, is not a checkpoint.
    (run / CHECKPOINTS / ".staging-step_0000010").mkdir(parents=True)
    (run / CHECKPOINTS / "step_0000010").mkdir()
    assert list_checkpoints(run / CHECKPOINTS) == []
    (run / CHECKPOINTS / "step_0000010" / INFO_FILE).write_text(json.dumps({"fingerprint": "abc"}))
    checkpoint = run / CHECKPOINTS / "step_0000010"
    assert find_checkpoint("auto", run, "abc") == checkpoint
    assert find_checkpoint("auto", run, "other") is None
    # A job rerun in its own folder (a SLURM requeue) continues without being asked ...
    assert find_checkpoint(None, run, "abc") == checkpoint
    # ... but a new run folder picks up a sibling's checkpoint only with resume=auto (or its path).
    sibling = tmp_path / "outputs" / "second"
    sibling.mkdir()
    assert find_checkpoint(None, sibling, "abc") is None
    assert find_checkpoint("auto", sibling, "abc") == checkpoint
    assert find_checkpoint(str(run), sibling, "abc") == checkpoint
    # A finished run is never resumed by auto.
    (run / "result.json").write_text(json.dumps({"status": "completed"}))
    assert find_checkpoint(None, run, "abc") is None and find_checkpoint("auto", sibling, "abc") is None


def train_on_cpu(model, batches, loss_fn, optimizer, settings, validate):
    """Run ``train`` in a fresh CPU Accelerator (its global state is reset afterwards)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    try:
        accelerator = Accelerator(cpu=True)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        return train(
            model,
            loss_fn=loss_fn,
            train_loader=loader,
            validate=validate,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
            accelerator=accelerator,
            settings=settings,
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_out_of_memory_in_training_names_the_knobs():
    model = torch.nn.Linear(4, 1)
    batches = [{"input_ids": torch.zeros(8, 137, dtype=torch.long), "attention_mask": torch.ones(8, 137)}]

    def loss_fn(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(PeftrecError) as caught:
        train_on_cpu(
            model,
            batches,
            loss_fn,
            optimizer,
            TrainSettings(2, 1, 1, None, "auc", True),
            lambda: {"auc": 0.5},
        )
    message = str(caught.value)
    assert "out of memory during training on a batch of 8 rows x 137 tokens" in message
    for knob in ("trainer.batch_size", "trainer.grad_accum", "model.gradient_checkpointing=true", "4bit"):
        assert knob in message


def test_train_outcome_state_round_trips():
    outcome = TrainOutcome(steps=7, best_step=5, best_metrics={"auc": 0.7}, epoch=1, batches_in_epoch=3)
    outcome.throughput.samples = 112
    outcome.best_state = {"w": torch.ones(2)}
    restored = TrainOutcome()
    restored.load_state_dict(outcome.state_dict())
    assert (restored.steps, restored.best_step, restored.epoch, restored.batches_in_epoch) == (7, 5, 1, 3)
    assert restored.throughput.samples == 112 and restored.resumed_from_step == 7
    assert torch.equal(restored.best_state["w"], torch.ones(2))


def test_training_without_validation_takes_every_step_and_chooses_no_best():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    before = model.weight.detach().clone()
    batches = [{"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}] * 3
    outcome = train_on_cpu(
        model,
        batches,
        lambda m, batch: m(batch["input_ids"].float()).sum(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        TrainSettings(5, 1, 1, None, "auc", True),
        validate=None,
    )
    assert (outcome.steps, outcome.epoch) == (
        5,
        1,
    )  # 3 batches an epoch: the second epoch's 2nd batch ends it
    assert outcome.validations == [] and outcome.best_step is None and outcome.best_state == {}
    # d(sum(x @ w))/dw = 2 rows x 1 = 2 per input: five SGD steps of 0.1 x 2 each.
    assert torch.allclose(model.weight.detach(), before - 5 * 0.1 * 2)
    assert (outcome.throughput.samples, outcome.throughput.tokens) == (10, 40)
