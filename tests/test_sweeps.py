"""Config sweeps through Hydra's launcher and sweeper plugins: parallel local processes (joblib),
submitit (its local executor stands in for SLURM here), and an Optuna search on the validation metric.
Each sweep's run folders are read by the benchmark report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cli import peftrec, toy_overrides

QUICK = ("trainer.max_steps=4", "trainer.eval_every=2")


def sweep_overrides(tiny_model_dir: Path, toy_csv: tuple[Path, Path], sweep: Path, *extra: str) -> list[str]:
    base = toy_overrides(tiny_model_dir, toy_csv, sweep / "unused", *QUICK, *extra)
    return ["-m", *[o for o in base if not o.startswith("hydra.run.dir")], f"hydra.sweep.dir={sweep}"]


def results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]


def report(sweep: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "peftrec.report", str(sweep)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("launcher", ["local_parallel", "submitit_local"])
def test_launchers_run_each_config_in_its_own_process_and_folder(tiny_model_dir, toy_csv, tmp_path, launcher):
    sweep = tmp_path / launcher
    proc = peftrec(
        *sweep_overrides(tiny_model_dir, toy_csv, sweep, "seed=0,1", f"hydra/launcher={launcher}"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(sweep)
    assert sorted(r["seed"] for r in runs) == [0, 1]
    assert all(r["status"] == "completed" and r["steps"] == 4 for r in runs)
    # Two seeds of one config: one report row with its mean over the seeds.
    assert "| click | lora |" in report(sweep) and "| 2 |" in report(sweep)


def test_slurm_launcher_config_composes_with_the_submitit_plugin(tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "peftrec", "recipe=lora_click", "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu", "--cfg", "hydra",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_task"] == 1
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0  # requeue on preemption/timeout


def test_optuna_search_optimises_the_validation_metric_the_runner_returns(tiny_model_dir, toy_csv, tmp_path):
    sweep = tmp_path / "search"
    proc = peftrec(
        *sweep_overrides(tiny_model_dir, toy_csv, sweep, "hydra/sweeper=lora_search", "hydra.sweeper.n_trials=3"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(sweep)
    assert len(runs) == 3
    # Each trial drew its own lr, r and dropout from the search space.
    drawn = {(r["config"]["trainer"]["optimizer"]["lr"], r["config"]["peft"]["r"]) for r in runs}
    assert len(drawn) == 3
    assert all(1e-4 <= lr <= 3e-2 and rank in (4, 8, 16, 32) for lr, rank in drawn)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # AUC is maximised: the best value is the highest best-step validation AUC among the trials.
    values = [r["metrics"]["validation"]["auc"] for r in runs]
    assert best["best_value"] == pytest.approx(max(values))
    winner = runs[values.index(max(values))]
    assert best["best_params"]["peft.r"] == winner["config"]["peft"]["r"]
    # Trials are different configs (not seeds of one): each its own row of the click table.
    table = report(sweep)
    assert all(f"| {k} | lora |" in table for k in range(3)) and "mean over seeds" not in table
