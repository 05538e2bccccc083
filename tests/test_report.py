"""The report tables are derived from run records; missing fields show as '-'."""

import json

from peftrec.report import load_records, markdown

RECORD = {
    "task": "click",
    "method": "lora",
    "model": "m",
    "metrics": {"test": {"auc": 0.6234, "logloss": 0.7}, "test_ci95_by_user": {"auc": [0.5, 0.7]}},
    "params": {"trainable": 460800},
    "speed": {"train_samples_per_s": 2.4, "eval_samples_per_s": 7.0},
    "memory": {"train": {"kind": "process_peak_rss", "gib": 5.1}},
    "wall_seconds": 540,
    "device": {"name": "CPU X"},
    "split": {"fingerprint": "abc", "params": {"protocol": "tallrec"}},
    "baselines_test": {"user_history_mean": {"auc": 0.811}},
}


def test_table_rows_from_records_and_baselines_once_per_split(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(RECORD))
    (tmp_path / "b.json").write_text(json.dumps({**RECORD, "method": "zero-shot"}))
    (tmp_path / "c.json").write_text(json.dumps({"method": "broken"}))
    table = markdown(load_records(tmp_path)).splitlines()
    assert table[0] == "### click"
    assert table[4] == (
        "| a | lora | m | tallrec | 0.623 [0.500, 0.700] | 0.700 | 460,800 | 2.40 | 7.00 | "
        "5.10 GiB (process_peak_rss) | 9.0 min | CPU X |"
    )
    assert table[6].startswith("| c | broken | - | - | - | - | - |")
    assert [line for line in table if "baseline" in line] == [
        "| baseline: user_history_mean | classical | - | tallrec | 0.811 | - | - | - | - | - | - | - |"
    ]


def test_a_table_per_task_and_the_mean_over_seeds(tmp_path):
    rating = {
        "task": "rating", "method": "lora", "model": "m", "steps": 48,
        "split": {"fingerprint": "r", "params": {"protocol": "per_user", "train_shots": 64}},
    }  # fmt: skip
    for seed, rmse in enumerate([1.0, 1.2, 1.1]):
        (tmp_path / f"r{seed}.json").write_text(json.dumps({**rating, "seed": seed, "metrics": {"test": {"rmse": rmse}}}))
    (tmp_path / "baselines.json").write_text(
        json.dumps({"task": "rating", "method": "baselines", "split": rating["split"],
                    "baselines_test": {"biased_mf": {"rmse": 0.95, "mae": 0.75}}})
    )  # fmt: skip
    text = markdown(load_records(tmp_path))
    assert "### rating" in text and "test rmse (lower better) [95% CI by user]" in text
    assert "| baseline: biased_mf | classical | - | per_user, 64 shots | 0.950 | 0.750 |" in text
    assert "| rating | lora | m | per_user, 64 shots | 48 | 3 | 1.100 ± 0.100 (rmse) |" in text


def test_failed_runs_are_listed_and_only_seeds_of_one_config_are_averaged(tmp_path):
    config = {"trainer": {"max_steps": 24, "resume": None}, "seed": 0}
    runs = {
        # One config, one seed, run on 1 and on 2 processes: not two seeds.
        "one": {**RECORD, "seed": 0, "config": config, "processes": 1},
        "two": {**RECORD, "seed": 0, "config": config, "processes": 2},
        # Another config (a different learning rate): not a seed of the first.
        "lr": {**RECORD, "seed": 1, "config": {**config, "trainer": {"max_steps": 24, "lr": 1}}, "processes": 1},
        "failed": {"status": "failed", "error": "the training loss became nan at step 2", "task": "click",
                   "method": "lora", "seed": 0},
    }  # fmt: skip
    for name, record in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    report = markdown(load_records(tmp_path))
    assert "| failed (failed: the training loss became nan at step 2) | lora |" in report
    assert "mean over seeds" not in report
    # A second seed of the first config (resume settings do not make another config): averaged.
    second = {**RECORD, "seed": 1, "config": {**config, "seed": 1, "trainer": {"max_steps": 24, "resume": "auto"}}}
    (tmp_path / "seed1.json").write_text(json.dumps({**second, "processes": 1}))
    report = markdown(load_records(tmp_path))
    assert "| click | lora | m | tallrec | None | 2 | 0.623 ± 0.000 (auc) |" in report
