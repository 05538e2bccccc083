"""`python -m peftrec` end to end on a tiny random model and the user's own CSV files.

Runs the real entry point in a subprocess (Hydra, Accelerate, peft, the run folder), offline.
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
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from peftrec.batching import make_loader
from peftrec.checkpoint import HEAD_FILE
from peftrec.data import ClickSplit, load_tabular
from peftrec.models import load_tokenizer
from peftrec.tasks.click import ClickPrompt, ClickTask

REPO = Path(__file__).resolve().parent.parent


def peftrec(
    *overrides: str, cwd: Path, env_extra: dict | None = None, entry: tuple[str, ...] = ("-m", "peftrec")
) -> subprocess.CompletedProcess:
    """``python -m peftrec OVERRIDES`` offline with a private cache (``entry``: another way into main)."""
    env = {**os.environ, "PEFTREC_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PEFTREC_CACHE": str(cwd / "cache")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *entry, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def toy_overrides(
    model_dir: Path,
    csv: tuple[Path, Path],
    run_dir: Path,
    *extra: str,
    recipe: str = "lora_click",
    protocol: str = "full",
) -> list[str]:
    inter, items = csv
    return [
        f"recipe={recipe}",
        f"model.name={model_dir}",
        "data=custom",
        f"data.interactions={inter}",
        f"data.items={items}",
        "data.columns.user_id=user",
        "data.columns.item_id=movie",
        "data.columns.rating=stars",
        "data.columns.timestamp=time",
        "data.item_columns.item_id=movie",
        "data.item_columns.title=name",
        "data.history_len=5",
        f"data.protocol={protocol}",
        "trainer.precision=fp32",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


# LoRA r=8 on q_proj (64 -> 64) and v_proj (64 -> 2 kv heads x 16 = 32) in 2 layers:
# q: A 8x64 + B 64x8 = 1024; v: A 8x64 + B 32x8 = 768; (1024 + 768) x 2 layers.
TINY_LORA_PARAMS = (8 * 64 + 64 * 8 + 8 * 64 + 32 * 8) * 2


# Enough LoRA training for the toy data's Good/Bad titles to decide the click (test AUC > 0.95).
LEARNS_THE_TOY_DATA = (
    "trainer.max_steps=60",
    "trainer.eval_every=30",
    "trainer.batch_size=16",
    "trainer.optimizer.lr=2e-2",
)


def test_lora_click_trains_records_and_saves_a_reloadable_adapter(tiny_model_dir, toy_csv, tmp_path):
    run_dir = tmp_path / "run"
    proc = peftrec(
        *toy_overrides(
            tiny_model_dir,
            toy_csv,
            run_dir,
            *LEARNS_THE_TOY_DATA,
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Run folder: {run_dir}" in proc.stdout

    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["method"] == "lora" and result["task"] == "click"
    assert result["params"]["trainable"] == TINY_LORA_PARAMS
    # The toy data is learnable from the target title alone (Good -> liked): training must find it.
    assert result["metrics"]["test"]["auc"] > 0.95
    # Trivial baselines on the same split: on toy data the item's earlier mean separates Good from Bad.
    assert result["baselines_test"]["item_mean_before"]["auc"] > 0.95
    assert set(result["baselines_test"]) == {
        "item_mean_before",
        "user_history_mean",
        "user_mean_plus_item_offset",
    }
    assert [v["step"] for v in result["validations"]] == [30, 60]
    assert result["best_step"] in (30, 60)
    for key in ("train_samples_per_s", "train_tokens_per_s", "eval_samples_per_s", "eval_tokens_per_s"):
        assert result["speed"][key] > 0
    assert result["memory"]["train"]["kind"] == "process_peak_rss" and result["memory"]["train"]["gib"] > 0
    assert result["versions"]["torch"] and result["device"]["type"] == "cpu"
    assert result["adapter"]["bytes"] > 0
    # The adapter folder carries the recipe that trained it (base model, task, prompt): usable on its own.
    recipe = yaml.safe_load((run_dir / "adapter" / "peftrec_recipe.yaml").read_text())
    assert recipe["model"]["name"] == str(tiny_model_dir) and recipe["task"] == result["config"]["task"]
    assert (run_dir / "config.yaml").is_file() and list(
        (run_dir / "tensorboard").rglob("events.out.tfevents.*")
    )

    # The saved adapter reproduces the recorded test scores exactly: save -> load -> same outputs.
    assert_adapter_reproduces_test_scores(run_dir, tiny_model_dir, toy_csv, result, rtol=1e-5, atol=1e-6)


def assert_adapter_reproduces_test_scores(
    run_dir: Path, model_dir: Path, toy_csv: tuple[Path, Path], result: dict, *, rtol: float, atol: float
) -> None:
    """The run's saved adapter, loaded into the eager base model, gives the test scores the run recorded."""
    split = ClickSplit.load(run_dir / "split")
    inter, items = toy_csv
    data = load_tabular(
        inter,
        items,
        columns={"user_id": "user", "item_id": "movie", "rating": "stars", "timestamp": "time"},
        item_columns={"item_id": "movie", "title": "name"},
    )
    tokenizer = load_tokenizer(model_dir, max_length=512)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    task = ClickTask(
        tokenizer,
        ClickPrompt(template=result["config"]["task"]["template"], like_threshold=3.0, chat_template=True),
    )
    loader = make_loader(task.dataset(split.test, data.item_titles()), tokenizer, batch_size=32, train=False)
    scores = torch.zeros(len(split.test))
    with torch.no_grad():
        for batch in loader:
            scores[batch["index"]] = task.scores(model, batch)
    recorded = pd.read_parquet(run_dir / "predictions_test.parquet")["score"].to_numpy()
    torch.testing.assert_close(scores.double(), torch.tensor(recorded), rtol=rtol, atol=atol)


def test_compiled_run_trains_checkpoints_and_saves_an_adapter_the_eager_model_loads(
    tiny_model_dir, toy_csv, tmp_path
):
    run_dir = tmp_path / "run"
    proc = peftrec(
        *toy_overrides(
            tiny_model_dir,
            toy_csv,
            run_dir,
            *LEARNS_THE_TOY_DATA,
            "trainer.compile=true",
            "trainer.pad_to_multiple_of=32",
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["config"]["trainer"]["compile"] is True
    assert result["metrics"]["test"]["auc"] > 0.95
    # Checkpoints and the adapter name the head's weights as the eager model does (no `_orig_mod.`).
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step_0000030", "step_0000060"]
    head = load_file(checkpoints[-1] / HEAD_FILE)
    assert head and not any("_orig_mod" in name for name in head)
    # The eager model with the saved adapter gives the compiled run's test scores (inductor fuses fp32
    # operations in another order, hence a tolerance).
    assert_adapter_reproduces_test_scores(run_dir, tiny_model_dir, toy_csv, result, rtol=1e-4, atol=1e-5)


def test_unknown_compile_mode_lists_the_modes(tiny_model_dir, toy_csv, tmp_path):
    proc = peftrec(
        *toy_overrides(tiny_model_dir, toy_csv, tmp_path / "run", "trainer.compile=true", "trainer.compile_mode=fast"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "trainer.compile_mode='fast' is not a torch.compile mode: use one of default, reduce-overhead" in proc.stderr


def test_zero_steps_evaluates_the_base_model_zero_shot(tiny_model_dir, toy_csv, tmp_path):
    run_dir = tmp_path / "zs"
    proc = peftrec(*toy_overrides(tiny_model_dir, toy_csv, run_dir, "trainer.max_steps=0"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["method"] == "zero-shot"
    assert result["params"]["trainable"] == 0 and result["adapter"] is None
    assert 0.0 <= result["metrics"]["test"]["auc"] <= 1.0


def test_unknown_recipe_lists_the_available_ones(tmp_path):
    proc = peftrec("recipe=lora_clik", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'recipe/lora_clik'" in proc.stderr
    assert "lora_click" in proc.stderr.split("Available options in 'recipe':")[1]


def test_unknown_config_key_is_named(tmp_path):
    proc = peftrec("recipe=lora_click", "trainer.max_stepz=3", cwd=tmp_path)
    assert proc.returncode != 0
    assert (
        "Could not override 'trainer.max_stepz'" in proc.stderr
        and "Key 'max_stepz' is not in struct" in proc.stderr
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["data.columns.rating=score"], "score"),
        (["task.label_words=[No,Absolutely]"], "'Absolutely' is 10 tokens"),
        (["data.history_len=40"], "history_len"),
    ],
    ids=["missing-column", "two-token-label", "empty-split"],
)
def test_bad_input_exits_with_a_message_naming_the_fix(tiny_model_dir, toy_csv, tmp_path, extra, expected):
    proc = peftrec(*toy_overrides(tiny_model_dir, toy_csv, tmp_path / "bad", *extra), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_file_is_named(tiny_model_dir, tmp_path):
    proc = peftrec(
        "recipe=lora_click",
        f"model.name={tiny_model_dir}",
        "data=custom",
        f"data.interactions={tmp_path / 'nope.csv'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_model_that_no_source_provides_names_every_source(tmp_path, toy_csv):
    proc = peftrec(
        *toy_overrides(Path("nobody/no-such-model"), toy_csv, tmp_path / "run"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "nobody/no-such-model" in proc.stderr and "Traceback" not in proc.stderr
