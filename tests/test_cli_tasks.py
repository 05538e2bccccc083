"""Rating, next-item and baseline recipes end to end on a tiny random model and toy CSV files.

Each runs the real entry point in a subprocess (Hydra, Accelerate, peft, the run folder), offline.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import peftrec, toy_overrides

N_ITEMS = 30


@pytest.fixture
def sequence_csv(tmp_path) -> tuple[Path, Path]:
    """Each user watches consecutive movies (k, k+1, k+2, ... mod 30): the next item is learnable."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        start = int(rng.integers(N_ITEMS))
        for t in range(12):
            item = (start + t) % N_ITEMS
            rows.append(
                {
                    "user": f"u{u}",
                    "movie": str(item),
                    "stars": int(rng.integers(1, 6)),
                    "time": 1_000_000 + 100 * t + u,
                }
            )
    inter, items = tmp_path / "seq.csv", tmp_path / "seq_movies.csv"
    pd.DataFrame(rows).to_csv(inter, index=False)
    pd.DataFrame(
        {"movie": [str(k) for k in range(N_ITEMS)], "name": [f"Good Movie {k}" for k in range(N_ITEMS)]}
    ).to_csv(items, index=False)
    return inter, items


def run_ok(*overrides: str, cwd: Path) -> dict:
    proc = peftrec(*overrides, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    return json.loads((Path(run_dir) / "result.json").read_text())


def test_lora_rating_learns_and_reports_rmse_beside_the_baselines(tiny_model_dir, toy_csv, tmp_path):
    run_dir = tmp_path / "rating"
    result = run_ok(
        *toy_overrides(
            tiny_model_dir, toy_csv, run_dir, "trainer.max_steps=100", "trainer.eval_every=50", "trainer.optimizer.lr=3e-2",
            "task.template='Rate {target}:'", recipe="lora_rating", protocol="per_user",
        ),
        cwd=tmp_path,
    )  # fmt: skip
    assert result["task"] == "rating" and result["split"]["params"]["protocol"] == "per_user"
    # Per-user leave-one-out: one test example per user, every user tested.
    assert result["examples"]["test"] == result["users"]["test"] == 40
    # Toy ratings are 5 for Good and 1 for Bad titles: the target title alone tells the rating. The tiny
    # model learns to separate them (not yet to reach 1 and 5) and beats the global mean.
    test = result["metrics"]["test"]
    assert test["rmse"] < result["baselines_test"]["global_mean"]["rmse"] - 0.5
    assert test["mae"] <= test["rmse"]
    predictions = pd.read_parquet(run_dir / "predictions_test.parquet")
    by_rating = predictions.groupby("rating")["prediction"]
    assert by_rating.min()[5.0] > by_rating.max()[1.0]
    assert set(result["baselines_test"]) >= {"biased_mf", "item_mean", "user_history_mean", "global_mean"}
    assert result["baselines_test"]["item_mean"]["rmse"] < 0.5  # the item alone decides the rating
    lo, hi = result["metrics"]["test_ci95_by_user"]["rmse"]
    assert lo <= result["metrics"]["test"]["rmse"] <= hi
    assert list(predictions.columns) == ["user_id", "item_id", "timestamp", "rating", "prediction"]
    assert predictions["prediction"].between(1, 5).all()


def test_generative_catalog_outputs_are_real_unseen_items(tiny_model_dir, sequence_csv, tmp_path):
    run_dir = tmp_path / "gen"
    result = run_ok(
        *toy_overrides(
            tiny_model_dir, sequence_csv, run_dir, "trainer.max_steps=20", "trainer.eval_every=10", "trainer.optimizer.lr=2e-2",
            "task.top_k=5", "task.num_beams=5", "task.metrics=[hit@1,hit@5,ndcg@5,mrr,valid_ratio]", "task.select_metric=ndcg@5",
            recipe="lora_generative", protocol="per_user",
        ),
        cwd=tmp_path,
    )  # fmt: skip
    test = result["metrics"]["test"]
    assert test["valid_ratio"] == 1.0  # every slot of every list is a catalog item, by construction
    assert 0.0 <= test["hit@1"] <= test["hit@5"] <= 1.0
    predictions = pd.read_parquet(run_dir / "predictions_test.parquet")
    seen = pd.read_csv(sequence_csv[0]).astype({"movie": str}).groupby("user")["movie"].apply(set)
    for user, target, recommended in zip(
        predictions["user_id"], predictions["item_id"], predictions["recommended"], strict=True
    ):
        assert len(recommended) == 5 and len(set(recommended)) == 5
        assert set(recommended) <= {str(k) for k in range(N_ITEMS)}
        assert not (set(recommended) & (seen[user] - {target}))  # earlier items are never recommended
    assert "popularity" in result["baselines_test"]


# The versions generation_compat refuses for prefix tuning, set before peftrec imports anything.
_BROKEN_PREFIX_GENERATION = (
    "import sys, peft, transformers; transformers.__version__ = '5.24.0'; peft.__version__ = '0.21.2'; "
    "from peftrec.__main__ import main; sys.argv[0] = 'peftrec'; main()"
)


def test_prefix_catalog_run_is_refused_before_it_trains_where_generation_is_broken(
    tiny_model_dir, sequence_csv, tmp_path
):
    run_dir = tmp_path / "gen"
    overrides = toy_overrides(
        tiny_model_dir, sequence_csv, run_dir, "peft=prefix", "trainer.max_steps=20", "trainer.eval_every=10",
        "trainer.checkpoint_every=2", "task.top_k=2", "task.num_beams=2", "task.metrics=[hit@1,ndcg@2]",
        "task.select_metric=ndcg@2", recipe="lora_generative", protocol="per_user",
    )  # fmt: skip
    proc = peftrec(*overrides, cwd=tmp_path, entry=("-c", _BROKEN_PREFIX_GENERATION))
    assert proc.returncode == 2  # peftrec: error: ..., an input error
    assert "pip install 'transformers<5.24'" in proc.stderr, proc.stderr[-3000:]
    # Refused before the first step: a run that trained would have checkpointed at step 2.
    assert (run_dir / ".hydra").is_dir() and not (run_dir / "checkpoints").exists()


def test_candidate_ranking_uses_the_same_saved_candidates_for_one_seed(
    tiny_model_dir, sequence_csv, tmp_path
):
    common = ("trainer.max_steps=0", "task=generative_candidates", "task.num_candidates=5",
              "task.metrics=[hit@1,ndcg@5,mrr,valid_ratio]", "task.select_metric=ndcg@5")  # fmt: skip
    first = run_ok(
        *toy_overrides(
            tiny_model_dir,
            sequence_csv,
            tmp_path / "a",
            *common,
            recipe="lora_generative",
            protocol="per_user",
        ),
        cwd=tmp_path,
    )
    again = run_ok(
        *toy_overrides(
            tiny_model_dir,
            sequence_csv,
            tmp_path / "b",
            *common,
            recipe="lora_generative",
            protocol="per_user",
        ),
        cwd=tmp_path,
    )
    other = run_ok(
        *toy_overrides(
            tiny_model_dir,
            sequence_csv,
            tmp_path / "c",
            *common,
            "seed=1",
            recipe="lora_generative",
            protocol="per_user",
        ),
        cwd=tmp_path,
    )
    assert first["candidates"]["test"] == again["candidates"]["test"] != other["candidates"]["test"]
    a = pd.read_parquet(tmp_path / "a" / "candidates" / "test.parquet")
    b = pd.read_parquet(tmp_path / "b" / "candidates" / "test.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert first["metrics"]["test"]["valid_ratio"] == 1.0 and 0 <= first["metrics"]["test"]["hit@1"] <= 1


@pytest.mark.parametrize("task", ["click", "rating", "generative"])
def test_baseline_recipes_write_a_record_without_a_model(
    task, tiny_model_dir, toy_csv, sequence_csv, tmp_path
):
    csv = sequence_csv if task == "generative" else toy_csv
    extra = ["task.baselines=[popularity]"] if task == "generative" else []  # SASRec has its own tests
    result = run_ok(
        *toy_overrides(Path("not/needed"), csv, tmp_path / "b", *extra, recipe=f"baselines_{task}",
                       protocol="tallrec" if task == "click" else "per_user"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result["method"] == "baselines" and result["task"] == task
    assert "params" not in result and result["baselines"]
    for values in result["baselines"].values():
        assert set(values) >= {"validation", "test", "test_ci95_by_user"}


def test_cold_start_users_reports_warm_and_cold_metrics(tiny_model_dir, toy_csv, tmp_path):
    result = run_ok(
        *toy_overrides(
            tiny_model_dir,
            toy_csv,
            tmp_path / "cold",
            "trainer.max_steps=0",
            "data.cold_start=users",
            "data.cold_fraction=0.5",
        ),
        cwd=tmp_path,
    )
    metrics = result["metrics"]
    assert metrics["test_cold"]["examples"] > 0 and metrics["test_warm"]["examples"] > 0
    assert metrics["test_cold"]["examples"] + metrics["test_warm"]["examples"] == result["examples"]["test"]
    assert 0 <= metrics["test_cold"]["auc"] <= 1


def test_few_shot_sweep_over_seeds_reports_mean_and_std(tiny_model_dir, toy_csv, tmp_path):
    """A Hydra multirun in one process (Accelerate state shared by the jobs), then the report."""
    sweep = tmp_path / "sweep"
    overrides = [
        o
        for o in toy_overrides(tiny_model_dir, toy_csv, tmp_path / "unused")
        if not o.startswith("hydra.run.dir")
    ]
    proc = peftrec(
        "-m", *overrides, "trainer.max_steps=3", "trainer.eval_every=3", "data.train_shots=16", "seed=0,1,2",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((sweep / str(k) / "result.json").read_text()) for k in range(3)]
    assert [r["seed"] for r in results] == [0, 1, 2]
    assert all(r["examples"]["train"] == 16 for r in results)
    # Each seed draws its own 16 shots from one split; validation and test rows are the same for all.
    assert len({r["split"]["fingerprint"] for r in results}) == 3
    report = subprocess.run(
        [sys.executable, "-m", "peftrec.report", str(sweep)], capture_output=True, text=True, check=True
    ).stdout
    aucs = [r["metrics"]["test"]["auc"] for r in results]
    expected = f"{statistics.mean(aucs):.3f} ± {statistics.stdev(aucs):.3f} (auc)"
    budget = f"3x{results[0]['config']['trainer']['batch_size']} {results[0]['device']['type']}"  # steps x batch
    assert f"| click | lora | {tiny_model_dir} | full, 16 shots | {budget} | 3 | {expected} |" in report
