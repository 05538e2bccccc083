"""The report is derived from run records: tables (missing fields show as '-'), LR choice on validation,
ties with the best run, the CSV, the Pareto front and the PNG plots."""

import copy
import csv
import io
import json

from peftrec.report import (
    load_records,
    main,
    markdown,
    pareto_front,
    plot_points,
    results_csv,
    select_lr,
    tie_marks,
    tie_with_best,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RECORD = {
    "task": "click",
    "method": "lora",
    "model": "m",
    "metrics": {"test": {"auc": 0.6234, "logloss": 0.7}, "test_ci95_by_user": {"auc": [0.5, 0.7]}},
    "params": {"trainable": 460800},
    "speed": {"train_samples_per_s": 2.4, "eval_samples_per_s": 7.0},
    "memory": {"train": {"kind": "process_peak_rss", "gib": 5.1}},
    "wall_seconds": 540,
    "device": {"name": "CPU X", "type": "cpu"},
    "split": {"fingerprint": "abc", "params": {"protocol": "tallrec"}},
    "baselines_test": {"user_history_mean": {"auc": 0.811}},
}


def run(test_auc: float, *, lr: float = 1e-3, seed: int = 0, validation: float | None = None, **fields):
    """A completed click run with a config (for LR groups and seeds), a test AUC and its costs."""
    record = copy.deepcopy(RECORD)
    record.update(seed=seed, select_metric="auc", status="completed")
    record["config"] = {
        "seed": seed,
        "peft": {"r": 8},
        "trainer": {"max_steps": 24, "batch_size": 16, "optimizer": {"lr": lr}},
    }
    record["metrics"]["test"]["auc"] = test_auc
    record["metrics"]["validation"] = {"auc": validation if validation is not None else test_auc}
    record["speed"]["train_seconds"] = 100.0
    for key, value in fields.items():
        record[key] = value
    return record


def write(folder, runs):
    for name, record in runs.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    return load_records(folder)


def test_table_rows_from_records_and_baselines_once_per_split(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(RECORD))
    (tmp_path / "b.json").write_text(json.dumps({**RECORD, "method": "zero-shot"}))
    (tmp_path / "c.json").write_text(json.dumps({"method": "broken"}))
    table = markdown(load_records(tmp_path)).splitlines()
    assert table[0] == "### click"
    assert table[4] == (
        "| a | lora | m | tallrec | - | 0.623 [0.500, 0.700] | best | 0.700 | 460,800 | 2.40 | 7.00 | "
        "5.10 GiB (process_peak_rss) | 9.0 min | CPU X |"
    )
    # Zero-shot is a reference, not a contender: no tie mark.
    assert table[5].startswith("| b | zero-shot | m | tallrec | - | 0.623 [0.500, 0.700] | - |")
    assert table[6].startswith("| c | broken | - | - | - | - | - | - |")
    assert [line for line in table if "baseline" in line] == [
        "| baseline: user_history_mean | classical | - | tallrec | - | 0.811 | - | - | - | - | - | - | - | - |"
    ]
    assert "Runs left out of the plots" not in "\n".join(table)  # only with plots (--out)


def test_new_speed_and_memory_fields_show_where_present(tmp_path):
    record = copy.deepcopy(RECORD)
    record["speed"]["train_mfu"] = 0.123
    record["memory"]["train"] = {
        "kind": "cuda_max_allocated",
        "gib": 10.0,
        "reserved_gib": 12.0,
        "average_gib": 7.5,
    }
    table = markdown(write(tmp_path, {"a": record}))
    assert "| 2.40 (MFU 12.3%) | 7.00 | 10.00 GiB (cuda_max_allocated, average 7.50) |" in table


def test_a_table_per_task_and_the_mean_over_seeds(tmp_path):
    rating = {
        "task": "rating", "method": "lora", "model": "m", "steps": 48,
        "split": {"fingerprint": "r", "params": {"protocol": "per_user", "train_shots": 64}},
    }  # fmt: skip
    for seed, rmse in enumerate([1.0, 1.2, 1.1]):
        (tmp_path / f"r{seed}.json").write_text(
            json.dumps({**rating, "seed": seed, "metrics": {"test": {"rmse": rmse}}})
        )
    (tmp_path / "baselines.json").write_text(
        json.dumps({"task": "rating", "method": "baselines", "split": rating["split"],
                    "baselines_test": {"biased_mf": {"rmse": 0.95, "mae": 0.75}}})
    )  # fmt: skip
    text = markdown(load_records(tmp_path))
    assert "### rating" in text and "test rmse (lower better) [95% CI by user]" in text
    assert "| baseline: biased_mf | classical | - | per_user, 64 shots | - | 0.950 | - | 0.750 |" in text
    assert "| rating | lora | m | per_user, 64 shots | 48x? | 3 | 1.100 ± 0.100 (rmse) |" in text
    assert "standard deviation over seeds; the [95% CI by user] in the tables above" in text


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
    report = markdown(write(tmp_path, runs))
    assert "| failed (failed: the training loss became nan at step 2) | lora |" in report
    assert "mean over seeds" not in report
    # A second seed of the first config (resume settings do not make another config): averaged.
    second = {
        **RECORD,
        "seed": 1,
        "config": {**config, "seed": 1, "trainer": {"max_steps": 24, "resume": "auto"}},
    }
    (tmp_path / "seed1.json").write_text(json.dumps({**second, "processes": 1}))
    report = markdown(load_records(tmp_path))
    assert "| click | lora | m | tallrec | 24x? cpu | 2 | 0.623 ± 0.000 (auc) |" in report


def test_csv_has_one_flat_row_per_record(tmp_path):
    record = run(0.65, lr=2e-4, validation=0.61)
    record.update(
        users={"test": 34}, examples={"test": 1000}, adapter={"bytes": 1866668},
        params={"trainable": 460800, "total": 134975808, "trainable_share": 0.0034},
        memory={"train": {"kind": "cuda_max_allocated", "gib": 10.5, "reserved_gib": 12.0, "average_gib": 8.25},
                "eval": {"kind": "cuda_max_allocated", "gib": 3.5}},
        speed={"train_samples_per_s": 2.5, "train_tokens_per_s": 418.4, "train_seconds": 162.5,
               "eval_samples_per_s": 7.5, "train_mfu": 0.31},
    )  # fmt: skip
    failed = {"task": "rating", "method": "lora", "status": "failed", "error": "out of memory", "seed": 1}
    rows = list(csv.DictReader(io.StringIO(results_csv(write(tmp_path, {"a": record, "b": failed})))))
    assert len(rows) == 2
    assert rows[0] == {
        "name": "a", "status": "completed", "error": "", "task": "click", "method": "lora", "model": "m",
        "seed": "0", "lr": "0.0002", "lr_selection": "", "split": "tallrec", "split_fingerprint": "abc",
        "metric": "auc", "test": "0.65", "test_ci_lo": "0.5", "test_ci_hi": "0.7", "secondary_metric": "logloss",
        "secondary_test": "0.7", "validation": "0.61", "trainable_params": "460800", "trainable_share": "0.0034",
        "adapter_bytes": "1866668", "train_memory_gib": "10.5", "train_memory_kind": "cuda_max_allocated",
        "train_reserved_gib": "12.0", "train_average_gib": "8.25", "eval_memory_gib": "3.5",
        "train_samples_per_s": "2.5", "train_tokens_per_s": "418.4", "train_seconds": "162.5",
        "eval_samples_per_s": "7.5", "train_mfu": "0.31", "wall_seconds": "540", "device": "CPU X",
        "test_users": "34", "test_examples": "1000",
    }  # fmt: skip
    assert (rows[1]["name"], rows[1]["status"], rows[1]["error"], rows[1]["metric"], rows[1]["test"]) == (
        "b", "failed", "out of memory", "rmse", ""
    )  # fmt: skip


def test_pareto_front_for_higher_and_lower_is_better():
    # (cost, value): the third point costs more than the second and scores worse.
    auc = [(1, 0.6), (2, 0.7), (3, 0.65), (4, 0.8)]
    assert pareto_front(auc) == [0, 1, 3]
    # RMSE: lower is better, so the cheapest point with 1.2 does not dominate the rest.
    rmse = [(1, 1.2), (2, 1.0), (3, 1.1), (4, 0.9)]
    assert pareto_front(rmse, lower_is_better=True) == [0, 1, 3]
    assert pareto_front(rmse, lower_is_better=False) == [0]
    # At equal cost only the better value is on the front.
    assert pareto_front([(1, 0.6), (1, 0.7), (5, 0.7)]) == [1]


def test_lr_is_chosen_on_validation_per_seed_and_the_others_are_listed(tmp_path):
    runs = {
        "s0_lr1e-4": run(0.80, lr=1e-4, seed=0, validation=0.60),
        "s0_lr1e-3": run(0.62, lr=1e-3, seed=0, validation=0.70),  # best on validation, not on test
        "s0_lr1e-2": run(0.70, lr=1e-2, seed=0, validation=0.65),
        "s1_lr1e-4": run(0.61, lr=1e-4, seed=1, validation=0.66),
        "s1_lr1e-3": run(0.64, lr=1e-3, seed=1, validation=0.69),
        "s1_lr1e-2": run(0.66, lr=1e-2, seed=1, validation=0.71),
        # Another config (rank 16) with one learning rate: no grid, kept.
        "r16": {**run(0.5), "config": {"seed": 0, "peft": {"r": 16}, "trainer": {"optimizer": {"lr": 1e-3}}}},
    }
    records = write(tmp_path, runs)
    selection = select_lr(records)
    assert [name for name, _ in selection.kept] == ["r16", "s0_lr1e-3", "s1_lr1e-2"]
    assert selection.grids == {"s0_lr1e-3": (1e-4, 1e-3, 1e-2), "s1_lr1e-2": (1e-4, 1e-3, 1e-2)}
    assert sorted(name for name, _, _ in selection.not_chosen) == [
        "s0_lr1e-2",
        "s0_lr1e-4",
        "s1_lr1e-3",
        "s1_lr1e-4",
    ]
    report = markdown(records)
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| s")]
    assert rows == ["| s0_lr1e-3", "| s1_lr1e-2"]
    assert "lora: lr chosen on validation from {0.0001, 0.001, 0.01}" in report
    assert "- s0_lr1e-4: lr 0.0001: validation auc 0.6000; chosen s0_lr1e-3 (lr 0.001, 0.7000)" in report
    # The mean over seeds averages the chosen runs of both seeds (0.62 and 0.66), not the rank-16 run.
    assert "| click | lora | m | tallrec | 24x16 cpu | 2 | 0.640 ± 0.028 (auc) |" in report
    by_name = {row["name"]: row["lr_selection"] for row in csv.DictReader(io.StringIO(results_csv(records)))}
    assert (
        by_name["s0_lr1e-3"] == "chosen on validation" and by_name["s0_lr1e-4"] == "not chosen on validation"
    )


def test_lr_choice_follows_the_direction_of_the_select_metric(tmp_path):
    def rating(lr, validation_rmse):
        record = run(0.0, lr=lr)
        record.update(task="rating", select_metric="rmse")
        record["metrics"] = {"test": {"rmse": 1.0}, "validation": {"rmse": validation_rmse}}
        return record

    records = write(tmp_path, {"low": rating(1e-4, 1.05), "high": rating(1e-3, 0.98)})
    assert [name for name, _ in select_lr(records).kept] == ["high"]


def test_tie_with_best_uses_either_interval():
    assert tie_with_best(0.66, [0.60, 0.68], 0.70, [0.65, 0.75]) == "yes"  # 0.66 lies in the best's interval
    assert tie_with_best(0.60, [0.55, 0.71], 0.70, None) == "yes"  # the best lies in this run's interval
    assert tie_with_best(0.60, [0.55, 0.64], 0.70, [0.65, 0.75]) == "no"
    assert tie_with_best(0.60, None, 0.70, None) == "-"
    runs = [
        ("best", run(0.70, metrics={"test": {"auc": 0.70}, "test_ci95_by_user": {"auc": [0.65, 0.75]}})),
        ("close", run(0.66, metrics={"test": {"auc": 0.66}, "test_ci95_by_user": {"auc": [0.60, 0.68]}})),
        ("far", run(0.60, metrics={"test": {"auc": 0.60}, "test_ci95_by_user": {"auc": [0.55, 0.64]}})),
        ("no_ci", run(0.69, metrics={"test": {"auc": 0.69}})),
        ("other_split", {**run(0.5), "split": {"params": {"protocol": "random"}}}),
    ]
    assert tie_marks(runs) == {
        "best": "best",
        "close": "yes",
        "far": "no",
        "no_ci": "yes",
        "other_split": "best",
    }


def test_write_report_plots_csv_and_left_out_runs(tmp_path, capsys):
    records_dir, out = tmp_path / "records", tmp_path / "out"
    records_dir.mkdir()
    no_memory = run(0.66, params={"trainable": 50000})
    del no_memory["memory"]
    trainer = {"max_steps": 24, "batch_size": 16}
    runs = {
        "lora": run(0.70, params={"trainable": 460800}),
        "ia3": {**run(0.65, params={"trainable": 57600}), "config": {"seed": 0, "peft": {"ia3": True}, "trainer": trainer}},
        "nomem": {**no_memory, "config": {"seed": 0, "peft": {"other": True}, "trainer": trainer}},
        "zero": {**run(0.55, params={"trainable": 0}), "method": "zero-shot", "steps": 0, "config": {"seed": 0}},
        "crash": {
            "task": "click",
            "method": "lora",
            "status": "failed",
            "error": "CUDA out of memory",
            "seed": 0,
        },
        "random": {**run(0.9), "split": {"fingerprint": "x", "params": {"protocol": "random"}}},
        "rating": {**run(0.0), "task": "rating", "metrics": {"test": {"rmse": 1.0}}},
    }  # fmt: skip
    write(records_dir, runs)
    main([str(records_dir), "--out", str(out)])
    printed = capsys.readouterr().out.split()
    # One comparison (tallrec split, 24 x 16 on a CPU) has two or more configurations: only it is plotted.
    expected = [
        f"click_auc_vs_{axis}_tallrec_24x16_cpu.png"
        for axis in ("trainable_params", "train_memory_gib", "train_seconds")
    ]
    assert [p.rsplit("/", 1)[-1] for p in printed] == [*expected, "report.md", "results.csv"]
    for name in expected:
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_SIGNATURE
    report = (out / "report.md").read_text()
    assert f"![{expected[0][:-4]}]({expected[0]})" in report
    left = report.split("### Runs left out of the plots", 1)[1]
    assert "- crash: failed: CUDA out of memory" in left
    assert "- nomem: missing memory.train.gib (not on the train_memory_gib plot)" in left
    assert "- random: the only configuration at split 'random', budget '24x16 cpu'" in left
    assert "- rating: the only configuration at split 'tallrec', budget '24x16 cpu'" in left
    # Zero-shot is a reference line, the trained runs with all values are points: neither is left out.
    assert "- zero" not in left and "- lora" not in left and "- ia3" not in left
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(runs)
    assert not list(out.glob(".*.tmp"))  # written through temporary files, none left behind
    assert write_report(load_records(records_dir), out)[-1] == out / "results.csv"


def test_runs_of_other_budgets_are_compared_and_plotted_apart(tmp_path):
    """A 125 x 64 GPU run and a 24 x 16 CPU run of the same split never tie or share a plot."""
    gpu = {"device": {"name": "H100", "type": "cuda"}, "steps": 125}

    def on_gpu(test_auc, ci, peft):
        record = run(test_auc, metrics={"test": {"auc": test_auc}, "test_ci95_by_user": {"auc": ci}}, **gpu)
        record["config"]["trainer"]["batch_size"] = 64
        record["config"]["peft"] = peft
        return record

    def on_cpu(test_auc, ci, peft):
        record = run(
            test_auc, metrics={"test": {"auc": test_auc}, "test_ci95_by_user": {"auc": ci}}, steps=24
        )
        record["config"]["peft"] = peft
        return record

    runs = {
        "gpu_lora": on_gpu(0.77, [0.64, 0.87], {"r": 8}),
        "gpu_ia3": on_gpu(0.74, [0.65, 0.83], {"ia3": True}),
        "cpu_lora": on_cpu(0.62, [0.54, 0.72], {"r": 8}),
        "cpu_ia3": on_cpu(0.58, [0.51, 0.66], {"ia3": True}),
        "cpu_prompt": on_cpu(0.49, [0.40, 0.60], {"prompt": True}),
    }
    records = write(tmp_path, runs)
    # Against all five, cpu_lora would not tie with gpu_lora (0.62 outside [0.64, 0.87], 0.77 outside its CI).
    assert tie_marks(records) == {
        "cpu_ia3": "yes",
        "cpu_lora": "best",
        "cpu_prompt": "no",
        "gpu_ia3": "yes",
        "gpu_lora": "best",
    }
    assert "| gpu_lora | lora | m | tallrec | 125x64 cuda | 0.770 [0.640, 0.870] | best |" in markdown(
        records
    )
    names = sorted(path.name for path in write_report(records, tmp_path / "out") if path.suffix == ".png")
    assert names == sorted(
        f"click_auc_vs_{axis}_tallrec_{budget}.png"
        for axis in ("trainable_params", "train_memory_gib", "train_seconds")
        for budget in ("125x64_cuda", "24x16_cpu")
    )


def test_points_that_would_share_a_label_name_their_learning_rate_or_a_number():
    def lora(auc, lr, dropout=0.05, seed=0):
        record = run(auc, lr=lr, seed=seed)
        record["config"]["peft"]["lora_dropout"] = dropout
        return record

    # Another LoRA setting (no dropout) at another rate is its own configuration, not an LR group.
    runs = [
        ("a", lora(0.60, 1e-3)),
        ("b", lora(0.64, 1e-2, dropout=0.0)),
        ("b1", lora(0.66, 1e-2, 0.0, seed=1)),
    ]
    points = plot_points(runs, ("params", "trainable"), {})
    assert sorted(p.label for p in points) == ["lora lr 0.001", "lora lr 0.01 x2"]
    same_rate = [("a", lora(0.60, 1e-3)), ("b", lora(0.64, 1e-3, dropout=0.0))]
    assert sorted(p.label for p in plot_points(same_rate, ("params", "trainable"), {})) == [
        "lora #1",
        "lora #2",
    ]


def test_options_added_after_a_record_do_not_split_its_seeds(tmp_path):
    old = run(0.60, seed=0)  # written before trainer.compile and task.baselines existed
    new = run(0.64, seed=1)
    new["config"]["trainer"]["compile"] = False  # the value that does what the old code did
    new["config"]["task"] = {"baselines": ["user_history_mean"]}
    old["config"]["task"] = {}
    compiled = run(0.70, seed=2)
    compiled["config"]["trainer"]["compile"] = True  # another configuration
    compiled["config"]["task"] = {}
    report = markdown(write(tmp_path, {"old": old, "new": new, "compiled": compiled}))
    assert "| click | lora | m | tallrec | 24x16 cpu | 2 | 0.620 ± 0.028 (auc) |" in report
    assert "| 3 |" not in report


def test_every_configuration_against_every_task_per_budget(tmp_path):
    def task_run(task, metric, value, *, method="lora", seed=0, lr=1e-3, steps=24, ci=None):
        record = run(0.5, seed=seed, lr=lr, method=method, task=task, steps=steps)
        record["metrics"] = {"test": {metric: value}, "test_ci95_by_user": {metric: ci} if ci else {}}
        record["params"] = {"trainable": 0 if steps == 0 else 1000 if method == "lora" else 50}
        record["config"]["task"] = {"name": task}
        record["split"] = {"params": {"protocol": "tallrec" if task == "click" else "per_user"}}
        return record

    runs = {
        "click_lora_0": task_run("click", "auc", 0.60, seed=0),
        "click_lora_1": task_run("click", "auc", 0.64, seed=1),
        "click_ia3": task_run("click", "auc", 0.55, method="ia3", ci=[0.5, 0.6]),
        "click_ia3_fast": task_run("click", "auc", 0.57, method="ia3", lr=1e-2),
        "rating_lora": task_run("rating", "rmse", 1.05, ci=[0.95, 1.15]),
        "click_zero": task_run("click", "auc", 0.52, method="zero-shot", steps=0),
        "rating_zero": task_run("rating", "rmse", 1.78, method="zero-shot", steps=0),
        "other_budget": task_run("click", "auc", 0.70, steps=48),  # alone in its budget: no table
    }
    lines = markdown(write(tmp_path, runs)).splitlines()
    start = lines.index("#### 24x16 cpu")
    assert lines[start + 2 : start + 8] == [
        "| method | model | trainable params | click: test auc (tallrec) | rating: test rmse (per_user) |",
        "|---|---|---|---|---|",
        # ia3 at two learning rates (no validation values, so neither is chosen): two rows, named by lr
        "| ia3 (lr 0.001) | m | 50 | 0.550 [0.500, 0.600] | - |",
        "| ia3 (lr 0.01) | m | 50 | 0.570 | - |",
        "| lora | m | 1,000 | 0.620 ± 0.028 (2 seeds) | 1.050 [0.950, 1.150] |",
        "| zero-shot | m | 0 | 0.520 | 1.780 |",
    ]
    assert "#### 48x16 cpu" not in lines
