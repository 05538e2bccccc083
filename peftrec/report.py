"""Derive Markdown tables from run records: ``python -m peftrec.report benchmarks/results``.

One table per task with its primary test metric (click: AUC, rating: RMSE, next item: NDCG@10) and a
second one, the classical baselines once per distinct split, and, where several seeds ran the same
configuration (few-shot sweeps), their mean and standard deviation. Tables are derived from the
records, never edited by hand. A record with missing fields is still listed, with ``-`` where a value is
missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from peftrec.config_fingerprint import config_fingerprint

# task -> (primary metric, secondary metric); a lower-is-better metric is marked in its header.
METRICS = {"click": ("auc", "logloss"), "rating": ("rmse", "mae"), "generative": ("ndcg@10", "hit@10")}
LOWER_IS_BETTER = {"rmse", "mae", "logloss"}


def load_records(folder: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Read the run records under ``folder``: its ``*.json`` files (committed records, named by file)
    and the ``result.json`` of every run folder below it (a Hydra multirun sweep, named by folder)."""
    folder = Path(folder)
    records = [(path.stem, json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))]
    for path in sorted(folder.glob("*/**/result.json")):
        records.append((str(path.parent.relative_to(folder)), json.loads(path.read_text())))
    return records


def _get(record: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _metric_header(name: str) -> str:
    return f"test {name}" + (" (lower better)" if name in LOWER_IS_BETTER else "")


def _split_label(record: dict[str, Any]) -> str:
    params = _get(record, "split", "params") or {}
    parts = [str(params.get("protocol", "-"))]
    if params.get("train_shots"):
        parts.append(f"{params['train_shots']} shots")
    if params.get("cold_start"):
        parts.append(f"cold {params['cold_start']}")
    ranking = _get(record, "config", "task", "ranking")
    if ranking:
        parts.append(ranking)
    if _get(record, "config", "trainer", "max_test_examples"):  # a fixed draw of the test rows (CPU budgets)
        parts.append(f"{_get(record, 'examples', 'test')} test rows")
    return ", ".join(parts)


def columns(task: str) -> list[str]:
    """Column names of a task's table."""
    primary, secondary = METRICS.get(task, METRICS["click"])
    return ["run", "method", "model", "split", f"{_metric_header(primary)} [95% CI by user]", _metric_header(secondary),
            "trainable params", "train samples/s", "eval samples/s", "peak memory", "wall", "device"]  # fmt: skip


def row(name: str, record: dict[str, Any]) -> list[str]:
    """One table row for a run record."""
    primary, secondary = METRICS.get(record.get("task", "click"), METRICS["click"])
    value = _get(record, "metrics", "test", primary)
    ci = _get(record, "metrics", "test_ci95_by_user", primary)
    memory = _get(record, "memory", "train") or _get(record, "memory", "eval") or {}
    status = record.get("status", "completed")
    return [
        name if status == "completed" else f"{name} ({status}: {str(record.get('error', '?'))[:80]})",
        str(record.get("method", "-")),
        str(record.get("model", "-")),
        _split_label(record),
        f"{_fmt(value, '.3f')}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
        _fmt(_get(record, "metrics", "test", secondary), ".3f"),
        _fmt(_get(record, "params", "trainable"), ","),
        _fmt(_get(record, "speed", "train_samples_per_s"), ".2f"),
        _fmt(_get(record, "speed", "eval_samples_per_s"), ".2f"),
        f"{memory['gib']:.2f} GiB ({memory.get('kind', '?')})" if memory.get("gib") is not None else "-",
        f"{record['wall_seconds'] / 60:.1f} min" if record.get("wall_seconds") is not None else "-",
        str(_get(record, "device", "name") or "-"),
    ]


def baseline_rows(records: list[tuple[str, dict[str, Any]]], task: str) -> list[list[str]]:
    """Rows for the classical baselines, once per distinct split and baseline (same split, same numbers)."""
    primary, secondary = METRICS.get(task, METRICS["click"])
    rows, seen = [], set()
    for _, record in records:
        # The same split can be scored on other rows (a test draw) or another way (candidates).
        where = (_get(record, "split", "fingerprint"), _split_label(record))
        for name, values in (record.get("baselines_test") or {}).items():
            if (*where, name) in seen:
                continue
            seen.add((*where, name))
            ci = _get(record, "baselines", name, "test_ci95_by_user", primary)
            rows.append(
                [f"baseline: {name}", "classical", "-", _split_label(record),
                 _fmt(values.get(primary), ".3f") + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                 _fmt(values.get(secondary), ".3f"), "-", "-", "-", "-", "-", "-"]
            )  # fmt: skip
    return rows


def seed_summary(records: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Mean and standard deviation over seeds of runs that differ only in the seed (e.g. few-shot)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for _, record in records:
        task = record.get("task", "click")
        if record.get("method") == "baselines":
            continue
        primary = METRICS.get(task, METRICS["click"])[0]
        value = _get(record, "metrics", "test", primary)
        if value is None:
            continue
        # Runs of one configuration: the same resolved config but the seed (and process count, which
        # the config does not hold); older records without a config group by what they name.
        config = record.get("config")
        same_config = (
            config_fingerprint({k: v for k, v in config.items() if k != "seed"}) if config else record.get("steps")
        )
        key = (
            task,
            primary,
            record.get("method"),
            record.get("model"),
            _split_label(record),
            record.get("steps"),
            same_config,
            record.get("processes", 1),
        )
        groups[key].append((record.get("seed"), value))
    lines = []
    for (task, primary, method, model, split, steps, *_), seeded in sorted(groups.items(), key=str):
        values = [value for _, value in seeded]
        if len({seed for seed, _ in seeded}) < 2:
            continue
        lines.append(
            f"| {task} | {method} | {model} | {split} | {steps} | {len(values)} | "
            f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({primary}) |"
        )
    if not lines:
        return []
    return [
        "| task | method | model | split | steps | seeds | test mean ± std |",
        "|---|---|---|---|---|---|---|",
        *lines,
    ]


def markdown(records: list[tuple[str, dict[str, Any]]]) -> str:
    """The Markdown report: a table per task (runs, then baselines), then the seed summary."""
    by_task: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for name, record in records:
        by_task[record.get("task", "click")].append((name, record))
    out: list[str] = []
    for task in sorted(by_task, key=lambda t: list(METRICS).index(t) if t in METRICS else len(METRICS)):
        group = by_task[task]
        header = columns(task)
        if out:
            out.append("")
        out += [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row(n, r)) + " |" for n, r in group if r.get("method") != "baselines"]
        out += ["| " + " | ".join(cells) + " |" for cells in baseline_rows(group, task)]
    summary = seed_summary(records)
    if summary:
        out += ["", "### mean over seeds", "", *summary]
    return "\n".join(out)


def main() -> None:
    """Print the report for a folder of run records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of run records, or a sweep's folder of run folders")
    args = parser.parse_args()
    print(markdown(load_records(args.folder)))


if __name__ == "__main__":
    main()
