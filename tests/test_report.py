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
