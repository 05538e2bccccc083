"""The report table is derived from run records; missing fields show as '-'."""

import json

from peftrec.report import load_records, markdown

RECORD = {
    "method": "lora",
    "model": "m",
    "metrics": {"test": {"auc": 0.6234}, "test_ci95_by_user": {"auc": [0.5, 0.7]}},
    "params": {"trainable": 460800},
    "speed": {"train_samples_per_s": 2.4, "eval_samples_per_s": 7.0},
    "memory": {"train": {"kind": "process_peak_rss", "gib": 5.1}},
    "wall_seconds": 540,
    "device": {"name": "CPU X"},
    "split": {"fingerprint": "abc"},
    "baselines_test": {"user_history_mean": {"auc": 0.811}},
}


def test_table_rows_from_records_and_baselines_once_per_split(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(RECORD))
    (tmp_path / "b.json").write_text(json.dumps({**RECORD, "method": "zero-shot"}))
    (tmp_path / "c.json").write_text(json.dumps({"method": "broken"}))
    table = markdown(load_records(tmp_path)).splitlines()
    assert table[2] == "| a | lora | m | 0.623 [0.500, 0.700] | 460,800 | 2.40 | 7.00 | 5.10 GiB (process_peak_rss) | 9.0 min | CPU X |"
    assert table[4].startswith("| c | broken | - | - | - |")
    assert [line for line in table if "baseline" in line] == ["| baseline: user_history_mean | trivial | - | 0.811 | 0 | - | - | - | - | - |"]
