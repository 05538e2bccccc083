"""Two real processes (torchrun, gloo on CPU) give the one-process results; precision refusals.

`accelerate launch --cpu --num_processes 2` would start one process only (ARCHITECTURE.md, pitfalls);
torchrun starts two, and peftrec picks gloo on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from test_cli import peftrec, toy_overrides

from peftrec.errors import PeftrecError
from peftrec.models import resolve_precision
from peftrec.run import check_batch_sizes


def torchrun(*overrides: str, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PEFTREC_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "PEFTREC_CACHE": str(cwd / "cache"),
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*command, "-m", "peftrec", *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# No dropout: with it each process draws its own masks, which one process would draw differently.
TRAINING = (
    "trainer.max_steps=40",
    "trainer.eval_every=20",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=32",  # 76 rows: the last batch (12) is padded across processes, then de-duplicated
    "trainer.optimizer.lr=2e-2",
    "peft.lora_dropout=0",
)


def test_two_processes_train_and_evaluate_like_one(tiny_model_dir, toy_csv, tmp_path):
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    proc = peftrec(*toy_overrides(tiny_model_dir, toy_csv, one_dir, *TRAINING), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(*toy_overrides(tiny_model_dir, toy_csv, two_dir, *TRAINING), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only the main process reports (the summary table's title line).
    assert proc.stdout.count("lora_click: lora on") == 1

    one = json.loads((one_dir / "result.json").read_text())
    two = json.loads((two_dir / "result.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    # Every example counted once: the padded duplicates of the last batch are dropped by gather_for_metrics.
    assert two["examples"] == one["examples"]
    # Throughput counts every process's rows: the same samples as one process.
    assert two["speed"]["train_samples"] == one["speed"]["train_samples"] == 40 * 16
    assert two["speed"]["eval_samples"] == one["speed"]["eval_samples"] == one["examples"]["test"]
    predictions_one = pd.read_parquet(one_dir / "predictions_test.parquet")
    predictions_two = pd.read_parquet(two_dir / "predictions_test.parquet")
    assert len(predictions_two) == len(predictions_one) == one["examples"]["test"]
    # The same batches split in two halves: the same training up to float summation order.
    for a, b in zip(one["validations"], two["validations"], strict=True):
        assert a["step"] == b["step"]
        for name in ("auc", "logloss", "accuracy"):
            assert b[name] == pytest.approx(a[name], abs=1e-5), (a["step"], name)
    for name, value in one["metrics"]["test"].items():
        assert two["metrics"]["test"][name] == pytest.approx(value, abs=1e-5), name
    torch.testing.assert_close(
        torch.tensor(predictions_two["score"].to_numpy()),
        torch.tensor(predictions_one["score"].to_numpy()),
        atol=1e-5,
        rtol=1e-5,
    )


def test_two_processes_evaluate_zero_shot_exactly_like_one(tiny_model_dir, toy_csv, tmp_path):
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    zero_shot = ("trainer.max_steps=0", "trainer.eval_batch_size=10")  # 76 rows: 8 batches, the last of 6
    proc = peftrec(*toy_overrides(tiny_model_dir, toy_csv, one_dir, *zero_shot), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(*toy_overrides(tiny_model_dir, toy_csv, two_dir, *zero_shot), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((one_dir / "result.json").read_text())
    two = json.loads((two_dir / "result.json").read_text())
    assert two["processes"] == 2
    for split in ("validation", "test"):
        for name, value in one["metrics"][split].items():
            assert two["metrics"][split][name] == pytest.approx(value, rel=1e-6), (split, name)


def test_batch_sizes_must_split_evenly_over_processes():
    trainer = OmegaConf.create({"batch_size": 16, "eval_batch_size": 30})
    check_batch_sizes(trainer, 2)
    with pytest.raises(PeftrecError, match=r"trainer.eval_batch_size=30 does not split evenly over 4 processes"):
        check_batch_sizes(trainer, 4)


def test_fp16_off_cuda_is_refused_rather_than_silently_fp32():
    with pytest.raises(PeftrecError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(PeftrecError, match="is not one of auto, bf16, fp16, fp32"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_trains_with_a_gradient_scaler_on_cuda(tiny_model_dir, toy_csv, tmp_path):
    run_dir = tmp_path / "fp16"
    overrides = toy_overrides(tiny_model_dir, toy_csv, run_dir, "trainer.max_steps=20", "trainer.eval_every=10")
    overrides = [o for o in overrides if not o.startswith("trainer.precision")] + ["trainer.precision=fp16"]
    proc = peftrec(*overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["precision"] == "fp16" and result["metrics"]["test"]["auc"] > 0.5
