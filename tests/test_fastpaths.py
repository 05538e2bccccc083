"""The fast-paths benchmark (peftrec.fastpaths): its parts by hand, and one run end to end on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from omegaconf import OmegaConf
from test_cli import toy_overrides
from test_cli_tasks import sequence_csv  # noqa: F401 - a fixture
from transformers import AutoTokenizer

from peftrec.batching import tokenize_prompts
from peftrec.errors import PeftrecError
from peftrec.fastpaths import (
    SYNC_WARNING,
    VARIANTS,
    HostWaits,
    StepLog,
    Variant,
    evaluates,
    evaluation_preference,
    fixed_length,
    full_lm_dataset,
    logged,
    markdown,
    ratios,
    selected_variants,
    variant_loader,
)
from peftrec.train import Throughput

TASK = SimpleNamespace(label_ids=[7, 9])  # label 0 -> token 7, label 1 -> token 9


def fastpaths(
    *overrides: str, cwd: Path, entry: tuple[str, ...] = ("-m", "peftrec.fastpaths")
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PEFTREC_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PEFTREC_CACHE": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, *entry, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# --- training rows ----------------------------------------------------------------------------------


def test_full_lm_dataset_appends_the_label_word_and_labels_every_token():
    rows = datasets.Dataset.from_dict(
        {
            "input_ids": [[1, 2, 3], [4, 5], [6]],
            "attention_mask": [[1, 1, 1], [1, 1], [1]],
            "labels": [0, 1, 1],
            "length": [3, 2, 1],
        }
    )
    lm = full_lm_dataset(TASK, rows)
    assert lm["input_ids"] == [[1, 2, 3, 7], [4, 5, 9], [6, 9]]
    assert lm["labels"] == lm["input_ids"]
    assert lm["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1], [1, 1]]
    assert lm["length"] == [4, 3, 2]


def test_full_lm_dataset_keeps_rows_with_token_labels_and_labels_the_prompt_too():
    rows = datasets.Dataset.from_dict(
        {
            "input_ids": [[1, 2, 3, 4], [5, 6, 7]],
            "attention_mask": [[1, 1, 1, 1], [1, 1, 1]],
            "labels": [[-100, -100, 3, 4], [-100, 6, 7]],
            "length": [4, 3],
        }
    )
    lm = full_lm_dataset(TASK, rows)
    assert lm["input_ids"] == [[1, 2, 3, 4], [5, 6, 7]]
    assert lm["labels"] == lm["input_ids"]
    assert lm["length"] == [4, 3]


@pytest.mark.parametrize(
    ("lengths", "expected"), [([5, 17, 9], 24), ([16, 3], 16), ([1], 8), ([8, 9], 16), ([64], 64)]
)
def test_fixed_length_rounds_the_longest_row_up_to_a_multiple_of_8(lengths, expected):
    assert fixed_length(datasets.Dataset.from_dict({"length": lengths})) == expected


# --- loaders ----------------------------------------------------------------------------------------

PROMPTS = [
    "Yes",
    "Answer: Yes",
    "A user rated movies.",
    "Good Movie 1, Good Movie 2, Bad Movie 3",
    "A user rated movies. Liked: none. Disliked: none.",
    'Will the user like the movie "x"? Answer Yes or No.',
    ", ".join(f"Good Movie {k}" for k in range(8)),
    ", ".join(f"Good Movie {k}, Bad Movie {k}" for k in range(8)),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def prompt_rows(tokenizer):
    return tokenize_prompts(PROMPTS, tokenizer, labels=[k % 2 for k in range(len(PROMPTS))], max_length=512)


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_prompt_rows_span_several_multiples_of_8(prompt_rows):
    # The loader tests below need short and long rows: grouped batches must be shorter than the longest.
    lengths = prompt_rows["length"]
    assert min(lengths) <= 8 and max(lengths) > 24


def test_fixed_padding_pads_every_batch_to_the_split_s_longest_row(prompt_rows, tokenizer):
    fixed = fixed_length(prompt_rows)
    assert fixed % 8 == 0 and fixed >= max(prompt_rows["length"]) > fixed - 8
    loader = variant_loader(prompt_rows, tokenizer, Variant("v", padding="fixed"), batch_size=3, seed=0)
    seen = []
    for batch in batches(loader):
        assert batch["input_ids"].shape[1] == fixed and batch["attention_mask"].shape[1] == fixed
        assert batch["labels"].shape == (len(batch["input_ids"]),)
        for row, index in enumerate(batch["index"].tolist()):
            assert int(batch["attention_mask"][row].sum()) == prompt_rows[index]["length"]
            assert (
                batch["input_ids"][row, : prompt_rows[index]["length"]].tolist()
                == prompt_rows[index]["input_ids"]
            )
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(PROMPTS)))


def test_fixed_padding_pads_token_labels_to_the_same_length(prompt_rows, tokenizer):
    lm = full_lm_dataset(TASK, prompt_rows)
    fixed = fixed_length(lm)
    loader = variant_loader(lm, tokenizer, VARIANTS["baseline"], batch_size=3, seed=0)
    for batch in batches(loader):
        assert batch["input_ids"].shape[1] == fixed and batch["labels"].shape == batch["input_ids"].shape
        real = batch["attention_mask"].bool()
        assert torch.equal(batch["labels"][real], batch["input_ids"][real])
        assert bool((batch["labels"][~real] == -100).all())


def test_grouped_padding_pads_each_batch_only_to_its_own_longest_row(prompt_rows, tokenizer):
    loader = variant_loader(prompt_rows, tokenizer, VARIANTS["fast"], batch_size=2, seed=0)
    widths, seen = [], []
    for batch in batches(loader):
        longest = max(prompt_rows[i]["length"] for i in batch["index"].tolist())
        assert batch["input_ids"].shape[1] == math.ceil(longest / 8) * 8
        widths.append(batch["input_ids"].shape[1])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(PROMPTS)))
    assert min(widths) < fixed_length(prompt_rows)  # shorter than the fixed padding somewhere


# --- step log, logged loss, ratios -------------------------------------------------------------------


def test_step_log_times_the_steps_after_warmup():
    steps = StepLog(
        ends=[10.0, 10.5, 11.5, 13.0],
        rows=[8, 8, 6, 4],
        tokens=[80, 70, 50, 30],
        padded_tokens=[96, 96, 64, 32],
        logit_positions=[8, 8, 6, 4],
    )
    assert steps.timed(1) == Throughput(seconds=3.0, samples=18, tokens=150, logit_positions=18)
    assert steps.timed(2) == Throughput(seconds=2.5, samples=10, tokens=80, logit_positions=10)
    assert steps.timed(3) == Throughput(seconds=1.5, samples=4, tokens=30, logit_positions=4)
    assert steps.timed(0) == Throughput()
    assert steps.timed(4) == Throughput()  # no step left to time


def test_step_log_leaves_the_steps_that_compiled_out_of_the_timing():
    steps = StepLog(
        ends=[10.0, 30.0, 30.5, 45.0, 45.5, 46.0],
        rows=[8, 8, 8, 4, 8, 8],
        tokens=[80, 80, 80, 40, 80, 80],
        padded_tokens=[96] * 6,
        logit_positions=[8] * 6,
        new_graphs=[12, 4, 0, 6, 0, 0],  # step 1 compiled the backward; step 3 a new batch shape
    )
    assert steps.timed_steps(1) == [2, 4, 5]
    assert steps.timed(1) == Throughput(seconds=1.5, samples=24, tokens=240, logit_positions=24)
    assert steps.compiling(1) == {"graphs_compiled": 22, "steps_compiling": 3, "compiling_steps_not_timed": 2}
    assert steps.compiling(4) == {"graphs_compiled": 22, "steps_compiling": 3, "compiling_steps_not_timed": 0}


def test_variants_add_the_large_batch_runs_asked_for_and_refuse_unknown_names():
    fp = OmegaConf.create({"variants": ["baseline", "fast"], "large_batch_size": 256, "large_batch_variants": ["fast", "cuda_graphs"]})
    variants = selected_variants(fp)
    assert [v.name for v in variants] == ["baseline", "fast", "fast_large_batch", "cuda_graphs_large_batch"]
    assert variants[3] == replace(VARIANTS["cuda_graphs"], name="cuda_graphs_large_batch", batch_size=256)
    assert (variants[3].compile_mode, variants[3].pad_to_multiple_of) == ("reduce-overhead", 32)
    assert [v.name for v in selected_variants(OmegaConf.merge(fp, {"large_batch_size": None}))] == ["baseline", "fast"]
    with pytest.raises(PeftrecError, match="unknown fast-paths variant.*compiled.*take baseline, fast"):
        selected_variants(OmegaConf.merge(fp, {"variants": ["fast", "compiled"]}))


def test_the_evaluated_variant_is_the_most_preferred_one_trained_so_far():
    fp = OmegaConf.create({"evaluation_variant": ["cuda_graphs", "compile", "fast"]})
    variants = [VARIANTS[name] for name in ("baseline", "fast", "compile", "cuda_graphs")]
    preference = evaluation_preference(fp, variants)
    assert preference == ["cuda_graphs", "compile", "fast"]
    assert not evaluates("baseline", preference, None)  # not on the list
    assert evaluates("fast", preference, None)  # the first listed one to train
    assert evaluates("compile", preference, "fast") and evaluates("cuda_graphs", preference, "compile")
    assert not evaluates("fast", preference, "compile") and not evaluates("compile", preference, "compile")
    assert evaluation_preference(OmegaConf.create({"evaluation_variant": "fast"}), variants) == ["fast"]
    large = [*variants, replace(VARIANTS["fast"], name="fast_large_batch", batch_size=256)]
    assert evaluation_preference(OmegaConf.create({"evaluation_variant": "fast_large_batch"}), large) == [
        "fast_large_batch"
    ]
    with pytest.raises(PeftrecError, match="unknown fast-paths variant.*cuda_graph in fastpaths.evaluation_variant"):
        evaluation_preference(OmegaConf.create({"evaluation_variant": ["cuda_graph", "fast"]}), variants)


def test_logged_records_rows_tokens_and_logit_positions():
    steps = StepLog.empty()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ids = torch.zeros(2, 4, dtype=torch.long)
    row_labels = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    token_labels = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.tensor([[-100, 5, 6, -100], [-100, 7, -100, -100]]),
    }
    loss = logged(lambda model, batch: torch.tensor(1.5), steps, full_lm=False)
    assert loss(None, row_labels).item() == 1.5
    loss(None, token_labels)
    logged(lambda model, batch: torch.tensor(0.0), steps, full_lm=True)(None, token_labels)
    # Token counts stay tensors (on a GPU, reading them would make the host wait) until settled.
    assert isinstance(steps.tokens[0], torch.Tensor) and isinstance(steps.logit_positions[1], torch.Tensor)
    steps.settle()
    assert all(type(n) is int for n in (*steps.tokens, *steps.logit_positions))
    assert steps.rows == [2, 2, 2]
    assert steps.tokens == [5, 5, 5]
    assert steps.padded_tokens == [8, 8, 8]
    # One per row; the labelled tokens; every real token under the full LM loss.
    assert steps.logit_positions == [2, 3, 5]


def test_host_waits_counts_the_sync_warnings_of_its_window_by_line_and_shows_the_rest(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    waits = HostWaits(torch.device("cuda"))
    with pytest.warns(UserWarning) as shown, waits.recording():
        warnings.warn(SYNC_WARNING, stacklevel=1)  # before the window: shown, not counted
        waits.start()
        for _ in range(3):
            warnings.warn(SYNC_WARNING, stacklevel=1)
        warnings.warn("something else", stacklevel=1)
        line = sys._getframe().f_lineno - 2  # the counted warn() above
        waits.stop()
    assert modes == ["warn", 0, 0]  # on for the window; off again when the recording ends
    assert waits.summary(steps=2) == {
        "per_step": 1.5,
        "steps_counted": 2,
        "sites": {f"test_fastpaths.py:{line}": 3},
    }
    assert [str(w.message) for w in shown] == [SYNC_WARNING, "something else"]
    assert HostWaits(torch.device("cpu")).summary(steps=2) is None


def train_result(samples_per_s: float, gib: float, auc: float) -> dict:
    return {"train_samples_per_s": samples_per_s, "memory": {"gib": gib}, "test": {"metrics": {"auc": auc}}}


def test_ratios_against_the_baseline_skip_failed_variants():
    train = {
        "baseline": train_result(100.0, 2.0, 0.70),
        "fast": train_result(300.0, 1.0, 0.72),
        "fixed_padding": train_result(150.0, 2.5, 0.69),
        "compile": {"switches": {"name": "compile"}, "error": "RuntimeError: no compiler"},
    }
    assert ratios(train, "auc") == {
        "fast": {"samples_per_s_x": 3.0, "peak_memory_x": 0.5, "test_auc_minus_baseline": 0.02},
        "fixed_padding": {"samples_per_s_x": 1.5, "peak_memory_x": 1.25, "test_auc_minus_baseline": -0.01},
    }
    assert ratios({"fast": train_result(300.0, 1.0, 0.72)}, "auc") == {}  # no baseline, no ratios
    zero = ratios({"baseline": train_result(0.0, 0.0, 0.5), "fast": train_result(3.0, 1.0, 0.5)}, "auc")
    assert zero == {"fast": {"samples_per_s_x": None, "peak_memory_x": None, "test_auc_minus_baseline": 0.0}}


# --- end to end ---------------------------------------------------------------------------------------


def toy_click_bench(
    model_dir: Path, csv: tuple[Path, Path], run_dir: Path, train_steps: int, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m peftrec.fastpaths`` on the toy click data (batches of 8, one warmup step); it must
    succeed. Returns the process and its record."""
    proc = fastpaths(
        *toy_overrides(
            model_dir,
            csv,
            run_dir,
            "fastpaths.batch_size=8",
            f"fastpaths.train_steps={train_steps}",
            "fastpaths.warmup_steps=1",
            *extra,
        ),
        cwd=run_dir.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((run_dir / "fastpaths.json").read_text())


def test_fastpaths_runs_baseline_fast_and_fixed_padding_on_cpu(tiny_model_dir, toy_csv, tmp_path):
    run_dir = tmp_path / "run"
    proc, record = toy_click_bench(
        tiny_model_dir, toy_csv, run_dir, 2, "fastpaths.variants=[baseline,fast,fixed_padding,checkpointing_every_4]"
    )
    assert record["kind"] == "fastpaths" and record["task"] == "click" and record["precision"] == "fp32"
    assert record["recipe"] == "lora_click" and record["primary_metric"] == "auc"
    assert record["complete"] is True and record["pending"] == []
    train = record["train"]
    assert list(train) == ["baseline", "fast", "fixed_padding", "checkpointing_every_4"]
    switches = train["baseline"]["switches"]
    assert (switches["loss"], switches["padding"], switches["attention"]) == ("full_lm", "fixed", "eager")
    assert train["fast"]["switches"] == {
        "name": "fast",
        "loss": "task",
        "padding": "grouped",
        "attention": "sdpa",
        "gradient_checkpointing": False,
        "gradient_checkpointing_every": 1,
        "compile_mode": None,
        "pad_to_multiple_of": 8,
        "batch_size": 8,
    }
    assert train["fixed_padding"]["switches"]["padding"] == "fixed"
    # The tiny model's two decoder layers: every fourth one from the first is layer 0 alone.
    assert [res["checkpointed_layers"] for res in train.values()] == [0, 0, 0, 1]
    for name, res in train.items():
        assert "error" not in res, name
        assert res["switches"]["batch_size"] == 8
        assert res["timed_steps"] == 2 and res["train_samples"] == 16, name
        assert res["train_samples_per_s"] > 0 and res["train_seconds"] > 0
        assert res["train_mfu"] is None  # CPU: no known peak
        assert res["memory"]["kind"] == "process_peak_rss" and res["memory"]["steps"] == 3
        # Padding only adds tokens; the baseline's rows carry one extra token (the answer).
        assert res["computed_tokens_per_sample"] >= res["real_tokens_per_sample"] > 0
        assert 0 <= res["test"]["metrics"]["auc"] <= 1
        assert res["test"]["examples"] == res["test"]["eval_samples"] > 0
    for name in ("baseline", "fixed_padding"):
        length = train[name]["fixed_length"]
        assert isinstance(length, int) and length % 8 == 0 and length > 0, name
        assert train[name]["computed_tokens_per_sample"] == length  # every row padded to it
    assert train["baseline"]["fixed_length"] >= train["fixed_padding"]["fixed_length"]
    assert train["fast"]["fixed_length"] is None
    assert set(record["vs_baseline"]) == {"fast", "fixed_padding", "checkpointing_every_4"}
    for ratio in record["vs_baseline"].values():
        assert ratio["samples_per_s_x"] > 0 and ratio["peak_memory_x"] > 0
        assert set(ratio) == {"samples_per_s_x", "peak_memory_x", "test_auc_minus_baseline"}

    # fp32: one forward pass and the first generated token's logits are the same computation.
    evaluation = record["evaluation"]
    single, generation = evaluation["single_forward"], evaluation["generation"]
    assert single["auc"] == pytest.approx(generation["auc"], abs=1e-3)
    assert evaluation["max_abs_score_difference"] < 1e-3
    assert single["eval_samples"] == generation["eval_samples"] == train["fast"]["test"]["examples"]
    assert single["auc"] == pytest.approx(train["fast"]["test"]["metrics"]["auc"], abs=1e-9)
    assert generation["max_new_tokens"] == 8 and generation["fixed_length"] % 8 == 0

    assert "| baseline |" in proc.stdout and "| fast |" in proc.stdout and "| fixed_padding |" in proc.stdout
    assert f"Record: {run_dir / 'fastpaths.json'}" in proc.stdout
    # Host waits are counted on a GPU only; a record that has them lists them under the table.
    assert all(res["host_waits"] is None for res in train.values())
    train["fast"]["host_waits"] = {"per_step": 1.1, "steps_counted": 10, "sites": {"masking_utils.py:369": 10}}
    assert "\nfast: the host waited for the GPU 1.1 times a timed step: masking_utils.py:369 (10)." in markdown(record)


def test_compile_variant_trains_the_same_head_leaves_compiling_steps_untimed_and_is_evaluated(
    tiny_model_dir, toy_csv, tmp_path
):
    # The eager backend traces the regions as inductor would, without compiling kernels: the compiled
    # model then runs the very ops of the eager one, so both variants must train the same head.
    run_dir = tmp_path / "run"
    proc, record = toy_click_bench(
        tiny_model_dir,
        toy_csv,
        run_dir,
        4,
        "fastpaths.variants=[fast,compile]",
        "fastpaths.compile_backend=eager",
        "fastpaths.evaluation_variant=compile",
    )
    fast, compiled = record["train"]["fast"], record["train"]["compile"]
    assert "graphs_compiled" not in fast and fast["timed_steps"] == 4
    assert compiled["switches"]["compile_mode"] == "default"
    assert compiled["graphs_compiled"] > 0 and compiled["steps_compiling"] >= 1  # the first step compiles
    assert compiled["timed_steps"] == 4 - compiled["compiling_steps_not_timed"]
    assert compiled["test"]["metrics"] == fast["test"]["metrics"]
    assert fast["test"]["eval_graphs_compiled"] == 0 and compiled["test"]["eval_graphs_compiled"] > 0
    evaluation = record["evaluation"]
    assert evaluation["variant"] == "compile"
    assert evaluation["single_forward"]["auc"] == pytest.approx(fast["test"]["metrics"]["auc"], abs=1e-9)
    assert f"compile: {compiled['graphs_compiled']} graphs compiled in" in proc.stdout


def test_prefix_beam_search_bench_fails_each_variant_before_timing_where_generation_is_broken(
    tiny_model_dir, sequence_csv, tmp_path  # noqa: F811 - the imported fixture
):
    run_dir = tmp_path / "run"
    broken = (  # the versions generation_compat refuses for prefix tuning, set before peftrec imports
        "import sys, peft, transformers; transformers.__version__ = '5.24.0'; peft.__version__ = '0.21.2'; "
        "from peftrec.fastpaths import main; main()"
    )
    proc = fastpaths(
        *toy_overrides(
            tiny_model_dir, sequence_csv, run_dir, "peft=prefix", "task.top_k=2", "task.num_beams=2",
            "task.metrics=[hit@1,ndcg@2]", "task.select_metric=ndcg@2", "fastpaths.batch_size=8",
            "fastpaths.train_steps=2", "fastpaths.warmup_steps=1", "fastpaths.variants=[fast]",
            recipe="lora_generative", protocol="per_user",
        ),
        cwd=tmp_path,
        entry=("-c", broken),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]  # a failed variant is recorded, not fatal
    record = json.loads((run_dir / "fastpaths.json").read_text())
    fast = record["train"]["fast"]
    assert "pip install 'transformers<5.24'" in fast["error"] and "train_samples_per_s" not in fast
    assert record["evaluation"] == {}
    assert "Training fast:" not in proc.stdout + proc.stderr  # refused before its steps, not after them at the test


def test_a_killed_run_keeps_the_variants_it_finished_and_a_failed_first_choice_falls_back_to_the_next(
    tiny_model_dir, toy_csv, tmp_path
):
    # The first choice for the evaluation fails; the third variant's process is killed outright (SIGKILL,
    # as a lease's time limit may): the record written after each variant must survive with what finished.
    run_dir = tmp_path / "run"
    planted = (
        "import os, signal\n"
        "from peftrec import fastpaths\n"
        "original = fastpaths.Bench.train_variant\n"
        "def train_variant(self, variant):\n"
        "    if variant.name == 'fixed_padding':\n"
        "        raise RuntimeError('planted failure')\n"
        "    if variant.name == 'eager_attention':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(self, variant)\n"
        "fastpaths.Bench.train_variant = train_variant\n"
        "fastpaths.main()\n"
    )
    proc = fastpaths(
        *toy_overrides(
            tiny_model_dir, toy_csv, run_dir, "fastpaths.batch_size=8", "fastpaths.train_steps=2",
            "fastpaths.warmup_steps=1", "fastpaths.variants=[fixed_padding,fast,eager_attention]",
            "fastpaths.evaluation_variant=[fixed_padding,fast]",
        ),
        cwd=tmp_path,
        entry=("-c", planted),
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-3000:]
    record = json.loads((run_dir / "fastpaths.json").read_text())
    assert record["complete"] is False and record["pending"] == ["eager_attention"]
    assert list(record["train"]) == ["fixed_padding", "fast"]
    assert record["train"]["fixed_padding"]["error"] == "RuntimeError: planted failure"
    fast = record["train"]["fast"]
    assert fast["timed_steps"] == 2 and 0 <= fast["test"]["metrics"]["auc"] <= 1
    evaluation = record["evaluation"]
    assert evaluation["variant"] == "fast"  # the next choice, once the first failed
    assert evaluation["single_forward"]["auc"] == pytest.approx(fast["test"]["metrics"]["auc"], abs=1e-9)
    assert record["vs_baseline"] == {}  # no baseline in this run
    assert "\nIncomplete: the run stopped before eager_attention." in markdown(record)
