"""Derive the benchmark report from run records: ``python -m peftrec.report FOLDER [--out DIR]``.

Without ``--out`` it prints Markdown: one table per task with its primary test metric (click: AUC,
rating: RMSE, next item: NDCG@10) and a second one, the classical baselines once per distinct split,
a table of every configuration against every task per training budget, and, where several seeds ran
the same configuration, their mean and standard deviation. With ``--out DIR`` it writes
``DIR/report.md`` (the same Markdown, with links to the plots and the runs left out of them),
``DIR/results.csv`` (one flat row per run record) and PNG plots, each file through a temporary file
and ``os.replace``. Tables are derived from the records, never edited by
hand. A record with missing fields is still listed, with ``-`` where a value is missing.

Rules the report applies, so that its numbers can be read without the code:

- Learning-rate grid: runs whose resolved configs differ only in ``trainer.optimizer.lr`` (same seed,
  same split, same process count) form an LR group. A group with two or more learning rates keeps, in
  tables and plots, only its run with the best validation value of the record's ``select_metric``;
  the others are listed as "not chosen on validation". Chosen per seed, before the mean over seeds.
- Comparisons: runs are compared only with runs of the same task, split (and test rows) and training
  budget (steps x batch on one kind of device, e.g. ``125x64 cuda``): a 24-step CPU run and a 125-step
  GPU run answer different questions, and their times and memory are not on one scale.
- Same configuration: two records are one configuration (seeds of it, or learning rates of one grid)
  when their resolved configs are equal without the seed (and learning rate). A record written before
  an option existed reads as holding the value listed in ``config_fingerprint.ADDED_OPTIONS``, and
  ``task.baselines`` is ignored; any other difference makes another configuration.
- Every configuration x task: per budget, a table with a row per method, model and learning rate and a
  column per task and split, each cell the mean ± standard deviation over seeds (or one run's value and
  interval), zero-shot runs last.
- Ties: a run "ties with the best" trained run of its comparison (best primary test metric, baselines
  and zero-shot aside) when the best's value lies within this run's 95% interval by user, or this
  run's value within the best's; ``-`` when neither interval is recorded (and for zero-shot runs).
- Plots: for each comparison with at least two trained configurations, its primary test metric against
  trainable parameters (log axis), peak training memory and training time, one PNG per axis, named
  ``<task>_<metric>_vs_<axis>_<split>_<budget>.png``. Runs of a comparison of their own are listed
  under "Runs left out of the plots", with failed runs and runs missing a value. A point is one
  configuration: its mean over seeds (the mean-over-seeds grouping), error bars from the lowest to the
  highest seed. The Pareto front (no other point costs as little and scores as well, one strictly)
  is drawn as a line; the classical baselines and zero-shot runs of that split are horizontal lines.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftrec.atomic import write_bytes_atomic
from peftrec.config_fingerprint import config_fingerprint, with_added_options

# task -> (primary metric, secondary metric); a lower-is-better metric is marked in its header.
METRICS = {"click": ("auc", "logloss"), "rating": ("rmse", "mae"), "generative": ("ndcg@10", "hit@10")}
LOWER_IS_BETTER = {"rmse", "mae", "logloss"}
LR_PATH = ("trainer", "optimizer", "lr")

# Plot x axes: file-name part -> (axis label, record field, log scale).
AXES = {
    "trainable_params": ("trainable parameters", ("params", "trainable"), True),
    "train_memory_gib": ("peak training memory (GiB)", ("memory", "train", "gib"), False),
    "train_seconds": ("training time (s)", ("speed", "train_seconds"), False),
}

Records = list[tuple[str, dict[str, Any]]]


def load_records(folder: str | Path) -> Records:
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


def _task(record: dict[str, Any]) -> str:
    return record.get("task", "click")


def _primary(task: str) -> str:
    return METRICS.get(task, METRICS["click"])[0]


def _completed(record: dict[str, Any]) -> bool:
    return record.get("status", "completed") == "completed"


def _is_better(a: float, b: float, metric: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` for ``metric``."""
    return a < b if metric in LOWER_IS_BETTER else a > b


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


def _budget(record: dict[str, Any]) -> str:
    """Steps x batch on a device kind, e.g. ``125x64 cuda`` (``zero-shot cpu`` untrained, ``-`` unknown)."""
    trainer = _get(record, "config", "trainer") or {}
    steps = record.get("steps", trainer.get("max_steps"))
    if steps is None:
        return "-"
    cost = f"{steps}x{trainer.get('batch_size', '?')}" if steps else "zero-shot"
    device = _get(record, "device", "type")
    return f"{cost} {device}" if device else cost


def comparison(record: dict[str, Any]) -> tuple[str, str]:
    """``(split label, budget)``: what a run is compared within (besides its task)."""
    return _split_label(record), _budget(record)


def _without(config: dict[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``config`` without the keys at ``paths`` (missing keys are fine)."""
    config = copy.deepcopy(config)
    for path in paths:
        parent = _get(config, *path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return config


def comparable_fingerprint(config: dict[str, Any], *drop: tuple[str, ...]) -> str:
    """The config's fingerprint without the ``drop`` paths, for grouping records written by different
    versions of the code: options added since are filled in at the value that reproduces the earlier
    behaviour (``ADDED_OPTIONS``), and ``task.baselines`` (which classical baselines are computed beside
    the run) is left out, as it does not change the run's own numbers."""
    return config_fingerprint(_without(with_added_options(config), *drop, ("task", "baselines")))


# --- learning-rate grids -------------------------------------------------------------------------


@dataclass
class LrSelection:
    """The outcome of choosing learning rates on validation.

    Attributes:
        kept: the records the tables and plots show, in their original order.
        not_chosen: ``(name, record, why)`` of the runs an LR group did not choose.
        grids: chosen run name -> the learning rates its group tried, ascending.
    """

    kept: Records
    not_chosen: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)


def lr_groups(records: Records) -> list[Records]:
    """Runs that differ only in the learning rate: same task, split, process count and seed, and
    configs equal without seed and learning rate (``comparable_fingerprint``). Records without a config
    or a learning rate (baselines) are in no group."""
    groups: dict[tuple, Records] = defaultdict(list)
    for name, record in records:
        config = record.get("config")
        if (
            not isinstance(config, dict)
            or _get(config, *LR_PATH) is None
            or record.get("method") == "baselines"
        ):
            continue
        # Process count and split label are outside the config but change the numbers.
        same = comparable_fingerprint(config, ("seed",), LR_PATH)
        seed = record.get("seed", config.get("seed"))
        groups[(_task(record), _split_label(record), record.get("processes", 1), same, seed)].append(
            (name, record)
        )
    return list(groups.values())


def _validation(record: dict[str, Any]) -> tuple[str, float | None]:
    """The metric a run selects on and its validation value."""
    metric = record.get("select_metric") or _primary(_task(record))
    return metric, _get(record, "metrics", "validation", metric)


def _choose(members: Records) -> tuple[str, dict[str, Any]] | None:
    """The completed member with the best validation value; None when no member has one."""
    best = None
    for name, record in members:
        metric, value = _validation(record)
        if not _completed(record) or value is None:
            continue
        if best is None or _is_better(value, _validation(best[1])[1], metric):
            best = (name, record)
    return best


def select_lr(records: Records) -> LrSelection:
    """Keep one run per LR group of two or more learning rates: the best on validation.

    Failed runs stay (they are reported as failed); a group where no run has a validation value keeps
    all its runs, as nothing can be chosen."""
    dropped: dict[str, str] = {}
    grids: dict[str, tuple[float, ...]] = {}
    for members in lr_groups(records):
        grid = tuple(sorted({_get(record, "config", *LR_PATH) for _, record in members}))
        chosen = _choose(members) if len(grid) > 1 else None
        if chosen is None:
            continue
        grids[chosen[0]] = grid
        metric, best = _validation(chosen[1])
        best_lr = _get(chosen[1], "config", *LR_PATH)
        for name, record in members:
            if name != chosen[0] and _completed(record):
                value = _validation(record)[1]
                dropped[name] = (
                    f"lr {_get(record, 'config', *LR_PATH):g}: validation {metric} {_fmt(value, '.4f')}; "
                    f"chosen {chosen[0]} (lr {best_lr:g}, {best:.4f})"
                )
    return LrSelection(
        kept=[(name, record) for name, record in records if name not in dropped],
        not_chosen=[(name, record, dropped[name]) for name, record in records if name in dropped],
        grids=grids,
    )


def lr_notes(task: str, selection: LrSelection) -> list[str]:
    """Lines under a task's table: the LR grid per method, then the runs not chosen on validation."""
    per_method: dict[str, set[float]] = defaultdict(set)
    for name, record in selection.kept:
        if name in selection.grids and _task(record) == task:
            per_method[str(record.get("method", "-"))].update(selection.grids[name])
    lines = [
        f"{method}: lr chosen on validation from {{{', '.join(f'{lr:g}' for lr in sorted(grid))}}}"
        for method, grid in sorted(per_method.items())
    ]
    dropped = [f"- {name}: {why}" for name, record, why in selection.not_chosen if _task(record) == task]
    if dropped:
        lines += ["", "Not chosen on validation:", *dropped]
    return lines


# --- ties ----------------------------------------------------------------------------------------


def tie_with_best(value: float, ci: list[float] | None, best: float, best_ci: list[float] | None) -> str:
    """``yes`` when ``best`` lies in ``ci`` or ``value`` in ``best_ci``; ``no`` when a recorded interval
    says otherwise; ``-`` when neither interval is recorded."""
    checks = []
    if ci:
        checks.append(ci[0] <= best <= ci[1])
    if best_ci:
        checks.append(best_ci[0] <= value <= best_ci[1])
    if not checks:
        return "-"
    return "yes" if any(checks) else "no"


def tie_marks(runs: Records) -> dict[str, str]:
    """Run name -> ``best``, ``yes``, ``no`` or ``-``: whether it ties with the best trained run of its task
    and comparison (split and budget) on the primary test metric (see ``tie_with_best``). Runs without a
    value, and zero-shot runs, get ``-``."""
    scored: dict[tuple[str, ...], Records] = defaultdict(list)
    for name, record in runs:
        task = _task(record)
        if (
            record.get("method") not in ("baselines", "zero-shot")
            and _get(record, "metrics", "test", _primary(task)) is not None
        ):
            scored[(task, *comparison(record))].append((name, record))
    marks: dict[str, str] = {}
    for (task, *_), members in scored.items():
        primary = _primary(task)
        value = {name: _get(record, "metrics", "test", primary) for name, record in members}
        ci = {name: _get(record, "metrics", "test_ci95_by_user", primary) for name, record in members}
        best = members[0][0]
        for name, _record in members[1:]:
            if _is_better(value[name], value[best], primary):
                best = name
        for name, _record in members:
            same = name == best
            marks[name] = "best" if same else tie_with_best(value[name], ci[name], value[best], ci[best])
    return marks


# --- tables --------------------------------------------------------------------------------------


def columns(task: str) -> list[str]:
    """Column names of a task's table."""
    primary, secondary = METRICS.get(task, METRICS["click"])
    return ["run", "method", "model", "split", "budget", f"{_metric_header(primary)} [95% CI by user]",
            "tie with best", _metric_header(secondary), "trainable params", "train samples/s",
            "eval samples/s", "peak memory", "wall", "device"]  # fmt: skip


def _memory_cell(record: dict[str, Any]) -> str:
    memory = _get(record, "memory", "train") or _get(record, "memory", "eval") or {}
    if memory.get("gib") is None:
        return "-"
    average = f", average {memory['average_gib']:.2f}" if memory.get("average_gib") is not None else ""
    return f"{memory['gib']:.2f} GiB ({memory.get('kind', '?')}{average})"


def _train_speed_cell(record: dict[str, Any]) -> str:
    mfu = _get(record, "speed", "train_mfu")
    return _fmt(_get(record, "speed", "train_samples_per_s"), ".2f") + (
        f" (MFU {mfu:.1%})" if mfu is not None else ""
    )


def row(name: str, record: dict[str, Any], tie: str = "-") -> list[str]:
    """One table row for a run record; ``tie`` is its mark from ``tie_marks``."""
    primary, secondary = METRICS.get(_task(record), METRICS["click"])
    value = _get(record, "metrics", "test", primary)
    ci = _get(record, "metrics", "test_ci95_by_user", primary)
    status = record.get("status", "completed")
    return [
        name if status == "completed" else f"{name} ({status}: {str(record.get('error', '?'))[:80]})",
        str(record.get("method", "-")),
        str(record.get("model", "-")),
        _split_label(record),
        _budget(record),
        f"{_fmt(value, '.3f')}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
        tie,
        _fmt(_get(record, "metrics", "test", secondary), ".3f"),
        _fmt(_get(record, "params", "trainable"), ","),
        _train_speed_cell(record),
        _fmt(_get(record, "speed", "eval_samples_per_s"), ".2f"),
        _memory_cell(record),
        f"{record['wall_seconds'] / 60:.1f} min" if record.get("wall_seconds") is not None else "-",
        str(_get(record, "device", "name") or "-"),
    ]


def baseline_rows(records: Records, task: str) -> list[list[str]]:
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
                [f"baseline: {name}", "classical", "-", _split_label(record), "-",
                 _fmt(values.get(primary), ".3f") + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""), "-",
                 _fmt(values.get(secondary), ".3f"), "-", "-", "-", "-", "-", "-"]
            )  # fmt: skip
    return rows


def seed_groups(records: Records, grids: dict[str, tuple[float, ...]] | None = None) -> dict[tuple, Records]:
    """Runs with a primary test value grouped by configuration; baselines aside.

    A group's key is ``(task, primary metric, method, model, split, budget, config, grid, processes)``:
    runs of one configuration share everything but the seed, and the learning rate too when it was
    chosen on validation (each seed may choose another one from the same grid, ``grid``). ``config`` is
    the config's ``comparable_fingerprint`` without the seed (older records without a config group by
    their step count)."""
    grids = grids or {}
    groups: dict[tuple, Records] = defaultdict(list)
    for name, record in records:
        task = _task(record)
        if record.get("method") == "baselines" or _get(record, "metrics", "test", _primary(task)) is None:
            continue
        grid = grids.get(name)
        config = record.get("config")
        drop = [("seed",), LR_PATH] if grid else [("seed",)]
        same = comparable_fingerprint(config, *drop) if isinstance(config, dict) else record.get("steps")
        key = (task, _primary(task), record.get("method"), record.get("model"), _split_label(record),
               _budget(record), same, grid, record.get("processes", 1))  # fmt: skip
        groups[key].append((name, record))
    return groups


def seed_summary(records: Records, grids: dict[str, tuple[float, ...]] | None = None) -> list[str]:
    """Mean and standard deviation over seeds of runs that differ only in the seed (e.g. few-shot)."""
    lines = []
    for (task, primary, method, model, split, budget, *_), members in sorted(
        seed_groups(records, grids).items(), key=str
    ):
        if len({record.get("seed") for _, record in members}) < 2:
            continue
        values = [_get(record, "metrics", "test", primary) for _, record in members]
        lines.append(
            f"| {task} | {method} | {model} | {split} | {budget} | {len(values)} | "
            f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({primary}) |"
        )
    if not lines:
        return []
    return [
        "| task | method | model | split | budget | seeds | test mean ± std |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
        "The ± is the standard deviation over seeds; the [95% CI by user] in the tables above resamples the"
        " test users of one run.",
    ]


def _device_kind(record: dict[str, Any]) -> str:
    return str(_get(record, "device", "type") or "-")


def _seed_cell(values: list[float], ci: list[float] | None) -> str:
    """One seed: the value and its 95% interval by user; several: mean ± standard deviation (n seeds)."""
    if len(values) == 1:
        return f"{values[0]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({len(values)} seeds)"


def _lr_label(members: Records, grid: tuple[float, ...] | None) -> str:
    if grid:
        return "lr chosen from " + ", ".join(f"{lr:g}" for lr in grid)
    rates = sorted({_get(record, "config", *LR_PATH) for _, record in members} - {None})
    return ", ".join(f"lr {lr:g}" for lr in rates)


def heads_by_task(records: Records, grids: dict[str, tuple[float, ...]] | None = None) -> list[str]:
    """Every configuration against every task, one table per training budget.

    A row is a method on a model at a learning rate (or a grid it chose from); a column is a task on
    one split, headed by its primary test metric. A cell holds the mean over seeds of that
    configuration (``seed_groups``), or one run's value with its 95% interval by user. Zero-shot runs on
    the same splits and kind of device close each table, as the untrained reference. A budget with a
    single configuration gets no table (its task table shows it).
    """
    grids = grids or {}
    # budget -> (method, model, lr label, n) -> (task, primary, split) -> runs; n tells apart two
    # configurations that would share a row (another process count, another option).
    tables: dict[str, dict[tuple, dict[tuple, Records]]] = defaultdict(lambda: defaultdict(dict))
    zero_shot: dict[str, dict[tuple, dict[tuple, Records]]] = defaultdict(lambda: defaultdict(dict))
    for key, members in sorted(seed_groups(records, grids).items(), key=str):
        task, primary, method, model, split, budget, _config, grid, _processes = key
        column = (task, primary, split)
        first = members[0][1]
        rows = zero_shot[_device_kind(first)] if first.get("steps") == 0 else tables[budget]
        lr = "" if first.get("steps") == 0 else _lr_label(members, grid)
        n = 0
        while column in rows.get((method, model, lr, n), {}):
            n += 1
        rows[(method, model, lr, n)][column] = members
    out: list[str] = []
    for budget, rows in sorted(tables.items()):
        if len(rows) < 2:
            continue
        columns_ = sorted({column for cells in rows.values() for column in cells}, key=str)
        device = budget.rsplit(" ", 1)[-1]
        references = {
            row_key: cells
            for row_key, cells in zero_shot.get(device, {}).items()
            if any(column in cells for column in columns_)
        }
        per_method = defaultdict(int)
        for method, model, *_ in rows:
            per_method[(method, model)] += 1
        header = ["method", "model", "trainable params"]
        header += [f"{task}: test {primary} ({split})" for task, primary, split in columns_]
        out += ["", f"#### {budget}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (method, model, lr, n), cells in sorted(rows.items(), key=str) + sorted(
            references.items(), key=str
        ):
            label = str(method)
            if per_method.get((method, model), 0) > 1:
                label += f" ({lr})" if lr else ""
                label += f" (configuration {n + 1})" if n else ""
            trainable = {_get(r, "params", "trainable") for members in cells.values() for _, r in members}
            line = [label, str(model), ", ".join(format(t, ",") for t in sorted(trainable - {None})) or "-"]
            for column in columns_:
                members = cells.get(column)
                if not members:
                    line.append("-")
                    continue
                primary = column[1]
                values = [_get(record, "metrics", "test", primary) for _, record in members]
                line.append(_seed_cell(values, _get(members[0][1], "metrics", "test_ci95_by_user", primary)))
            out.append("| " + " | ".join(line) + " |")
    if out:
        out += [
            "",
            "A cell is the mean ± standard deviation over seeds, or one run's value [95% CI by user].",
        ]
    return out


def _by_task(records: Records) -> dict[str, Records]:
    """Records per task, in the order of ``METRICS`` (unknown tasks last)."""
    by_task: dict[str, Records] = defaultdict(list)
    for name, record in records:
        by_task[_task(record)].append((name, record))
    order = sorted(by_task, key=lambda t: list(METRICS).index(t) if t in METRICS else len(METRICS))
    return {task: by_task[task] for task in order}


def task_table(task: str, group: Records) -> list[str]:
    """A task's table: its runs (with their tie marks), then the classical baselines."""
    header = columns(task)
    runs = [(name, record) for name, record in group if record.get("method") != "baselines"]
    marks = tie_marks(runs)
    out = [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row(name, record, marks.get(name, "-"))) + " |" for name, record in runs]
    out += ["| " + " | ".join(cells) + " |" for cells in baseline_rows(group, task)]
    return out


def left_out_section(left_out: list[tuple[str, str]]) -> list[str]:
    """The "Runs left out of the plots" section: one line per record, all its reasons."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for name, why in left_out:
        if why not in reasons[name]:
            reasons[name].append(why)
    lines = [f"- {name}: {'; '.join(whys)}" for name, whys in reasons.items()] or ["None."]
    return ["### Runs left out of the plots", "", *lines]


def markdown(
    records: Records,
    plots: dict[str, list[Path]] | None = None,
    left_out: list[tuple[str, str]] | None = None,
) -> str:
    """The Markdown report: a table per task (runs, then baselines, then LR notes and plot links), the
    mean over seeds and, when plots were made, the runs left out of them.

    Args:
        records: ``(name, record)`` pairs, as ``load_records`` gives them.
        plots: task -> PNG paths to link, relative to the report (file names in the same folder).
        left_out: ``(name, why)`` of records not plotted; the section is added when this is not None.
    """
    selection = select_lr(records)
    out: list[str] = []
    for task, group in _by_task(selection.kept).items():
        if out:
            out.append("")
        out += task_table(task, group)
        notes = lr_notes(task, selection)
        if notes:
            out += ["", *notes]
        for path in (plots or {}).get(task, []):
            out += ["", f"![{Path(path).stem}]({Path(path).name})"]
    matrix = heads_by_task(selection.kept, selection.grids)
    if matrix:
        out += ["", "### every configuration x task, per budget", *matrix]
    summary = seed_summary(selection.kept, selection.grids)
    if summary:
        out += ["", "### mean over seeds", "", *summary]
    if left_out is not None:
        out += ["", *left_out_section(left_out)]
    return "\n".join(out)


# --- CSV -----------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "name", "status", "error", "task", "method", "model", "seed", "lr", "lr_selection", "split",
    "split_fingerprint", "metric", "test", "test_ci_lo", "test_ci_hi", "secondary_metric", "secondary_test",
    "validation", "trainable_params", "trainable_share", "adapter_bytes", "train_memory_gib",
    "train_memory_kind", "train_reserved_gib", "train_average_gib", "eval_memory_gib", "train_samples_per_s",
    "train_tokens_per_s", "train_seconds", "eval_samples_per_s", "train_mfu", "wall_seconds", "device",
    "test_users", "test_examples",
]  # fmt: skip


def _lr_selection(name: str, selection: LrSelection) -> str:
    if name in selection.grids:
        return "chosen on validation"
    return "not chosen on validation" if any(name == n for n, _, _ in selection.not_chosen) else ""


def csv_row(name: str, record: dict[str, Any], selection: LrSelection | None = None) -> dict[str, Any]:
    """One flat CSV row of a run record (``CSV_COLUMNS``); missing values are None (empty cells)."""
    primary, secondary = METRICS.get(_task(record), METRICS["click"])
    ci = _get(record, "metrics", "test_ci95_by_user", primary) or [None, None]
    train = _get(record, "memory", "train") or {}
    return {
        "name": name, "status": record.get("status", "completed"), "error": record.get("error"),
        "task": _task(record), "method": record.get("method"), "model": record.get("model"),
        "seed": record.get("seed"), "lr": _get(record, "config", *LR_PATH),
        "lr_selection": _lr_selection(name, selection or LrSelection(kept=[])),
        "split": _split_label(record), "split_fingerprint": _get(record, "split", "fingerprint"),
        "metric": primary, "test": _get(record, "metrics", "test", primary),
        "test_ci_lo": ci[0], "test_ci_hi": ci[1],
        "secondary_metric": secondary, "secondary_test": _get(record, "metrics", "test", secondary),
        "validation": _get(record, "metrics", "validation", primary),
        "trainable_params": _get(record, "params", "trainable"),
        "trainable_share": _get(record, "params", "trainable_share"),
        "adapter_bytes": _get(record, "adapter", "bytes"),
        "train_memory_gib": train.get("gib"), "train_memory_kind": train.get("kind"),
        "train_reserved_gib": train.get("reserved_gib"), "train_average_gib": train.get("average_gib"),
        "eval_memory_gib": _get(record, "memory", "eval", "gib"),
        "train_samples_per_s": _get(record, "speed", "train_samples_per_s"),
        "train_tokens_per_s": _get(record, "speed", "train_tokens_per_s"),
        "train_seconds": _get(record, "speed", "train_seconds"),
        "eval_samples_per_s": _get(record, "speed", "eval_samples_per_s"),
        "train_mfu": _get(record, "speed", "train_mfu"), "wall_seconds": record.get("wall_seconds"),
        "device": _get(record, "device", "name"),
        "test_users": _get(record, "users", "test"), "test_examples": _get(record, "examples", "test"),
    }  # fmt: skip


def results_csv(records: Records) -> str:
    """The CSV text: a header and one row per run record (all of them, LR choice in ``lr_selection``)."""
    selection = select_lr(records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, record in records:
        writer.writerow(csv_row(name, record, selection))
    return buffer.getvalue()


# --- plots ---------------------------------------------------------------------------------------


@dataclass
class Point:
    """One plotted configuration: mean over its seeds, and the lowest and highest seed's value."""

    label: str
    cost: float
    value: float
    low: float
    high: float
    runs: list[str]


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool = False) -> list[int]:
    """Indices of the ``(cost, value)`` points on the Pareto front, by ascending cost.

    A point is on the front unless another costs no more and scores no worse, one of them strictly.
    """

    def no_worse(a: float, b: float) -> bool:
        return a <= b if lower_is_better else a >= b

    front = [
        i
        for i, (cost, value) in enumerate(points)
        if not any(
            c <= cost and no_worse(v, value) and (c, v) != (cost, value)
            for j, (c, v) in enumerate(points)
            if j != i
        )
    ]
    return sorted(front, key=lambda i: points[i])


def plot_points(runs: Records, x_path: tuple[str, ...], grids: dict[str, tuple[float, ...]]) -> list[Point]:
    """One point per configuration (``seed_groups``): mean cost and metric over its seeds.

    A point is labelled by its method (and model, when the plot has several); configurations that would
    share a label add their learning rate when it differs, else a number."""
    models = {record.get("model") for _, record in runs}
    points = []
    for (_task_name, primary, method, model, *_), members in seed_groups(runs, grids).items():
        values = [_get(record, "metrics", "test", primary) for _, record in members]
        costs = [_get(record, *x_path) for _, record in members]
        label = str(method) + (f" ({model})" if len(models) > 1 else "")
        points.append(
            Point(label, statistics.mean(costs), statistics.mean(values), min(values), max(values),
                  [name for name, _ in members])
        )  # fmt: skip
    lrs = {name: _get(record, "config", *LR_PATH) for name, record in runs}
    for same in _by_label(points).values():
        rates = [lrs[point.runs[0]] for point in same]
        distinct_lrs = None not in rates and len(set(rates)) == len(same)
        for i, point in enumerate(same, 1):
            point.label += f" lr {lrs[point.runs[0]]:g}" if distinct_lrs else f" #{i}"
    for point in points:
        seeds = len(point.runs)
        point.label += f" x{seeds}" if seeds > 1 else ""
    return points


def _by_label(points: list[Point]) -> dict[str, list[Point]]:
    """Labels that two or more points share, with those points."""
    by_label: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        by_label[point.label].append(point)
    return {label: same for label, same in by_label.items() if len(same) > 1}


def reference_lines(group: Records, split: str, primary: str) -> list[tuple[str, float]]:
    """``(label, value)`` of the classical baselines and zero-shot runs on ``split``.

    A baseline is taken from the first record that scored it; zero-shot is averaged per model."""
    lines: dict[str, float] = {}
    zero_shot: dict[str, list[float]] = defaultdict(list)
    for _, record in group:
        if _split_label(record) != split:
            continue
        for name, values in (record.get("baselines_test") or {}).items():
            if values.get(primary) is not None:
                lines.setdefault(name, values[primary])
        value = _get(record, "metrics", "test", primary)
        if record.get("method") == "zero-shot" and _completed(record) and value is not None:
            zero_shot[str(record.get("model"))].append(value)
    for model, values in zero_shot.items():
        lines["zero-shot" + (f" ({model})" if len(zero_shot) > 1 else "")] = statistics.mean(values)
    return list(lines.items())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.replace("@", "_at_")).strip("_")


def _label_lines(ax: Any, refs: list[tuple[str, float]], gap: float = 0.035) -> None:
    """Name the reference lines right of the axes, nudged apart where values are close."""
    low, high = ax.get_ylim()
    placed: list[float] = []
    for i, (label, value) in sorted(enumerate(refs), key=lambda item: item[1][1]):
        at = (value - low) / (high - low)
        # Close baselines (within a few thousandths) would print on top of each other.
        at = max(at, placed[-1] + gap) if placed else at
        placed.append(at)
        ax.text(
            1.01,
            at,
            f"{label} {value:.3f}",
            transform=ax.transAxes,
            fontsize=7,
            va="center",
            color=f"C{(i % 8) + 2}",
        )


def draw(
    points: list[Point], refs: list[tuple[str, float]], *, metric: str, xlabel: str, title: str, log: bool
) -> bytes:
    """A PNG of the points (error bars over seeds), their Pareto front and the reference lines."""
    # The Agg canvas with a bare Figure: no pyplot, so no display and no global backend to switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lower = metric in LOWER_IS_BETTER
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(
        [p.cost for p in points], [p.value for p in points],
        yerr=[[p.value - p.low for p in points], [p.high - p.value for p in points]],
        fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3, label="run (mean over seeds, min-max)",
    )  # fmt: skip
    front = [points[i] for i in pareto_front([(p.cost, p.value) for p in points], lower)]
    ax.plot([p.cost for p in front], [p.value for p in front], "-o", color="tab:red", markersize=9,
            markerfacecolor="none", markeredgewidth=2, label="Pareto front")  # fmt: skip
    for point in points:
        ax.annotate(
            point.label, (point.cost, point.value), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    for i, (label, value) in enumerate(refs):
        style = ":" if label.startswith("zero-shot") else "--"
        ax.axhline(value, linestyle=style, linewidth=1, color=f"C{(i % 8) + 2}")
    _label_lines(ax, refs)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {metric}" + (" (lower is better)" if lower else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def plotted_comparisons(
    runs: Records, grids: dict[str, tuple[float, ...]]
) -> tuple[list[tuple[str, str]], Records]:
    """The comparisons (split, budget) of trained runs with two or more configurations to plot, in order
    of split then budget, and the trained runs of the others."""
    trained = [(name, r) for name, r in runs if r.get("method") != "zero-shot"]
    configs: dict[tuple[str, str], set] = defaultdict(set)
    for key, members in seed_groups(trained, grids).items():
        configs[comparison(members[0][1])].add(key)
    plotted = sorted(where for where, keys in configs.items() if len(keys) >= 2)
    return plotted, [(name, r) for name, r in trained if comparison(r) not in plotted]


def _plot_candidates(task: str, group: Records) -> tuple[Records, list[tuple[str, str]]]:
    """Runs that could be plotted (completed, with a primary test value) and why the others cannot."""
    primary = _primary(task)
    runs, left_out = [], []
    for name, record in group:
        if record.get("method") == "baselines":
            continue  # drawn as reference lines, never as points
        if not _completed(record):
            left_out.append((name, f"{record.get('status')}: {record.get('error', '?')}"))
        elif _get(record, "metrics", "test", primary) is None:
            left_out.append((name, f"missing metrics.test.{primary}"))
        else:
            runs.append((name, record))
    return runs, left_out


def _axis_runs(runs: Records, axis: str) -> tuple[Records, list[tuple[str, str]]]:
    """The trained runs with a usable value on ``axis``, and why the others are not on that plot."""
    xlabel, path, log = AXES[axis]
    usable, left_out = [], []
    for name, record in runs:
        x = _get(record, *path)
        if x is None:
            left_out.append((name, f"missing {'.'.join(path)} (not on the {axis} plot)"))
        elif log and x <= 0:
            left_out.append((name, f"{'.'.join(path)} is {x}, not on a log axis (not on the {axis} plot)"))
        else:
            usable.append((name, record))
    return usable, left_out


def plot_task(
    task: str, group: Records, out: Path, grids: dict[str, tuple[float, ...]]
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write a task's PNG plots into ``out``: one per axis for each comparison (split, budget).

    Args:
        task: the task name.
        group: the task's records after the LR choice.
        out: the folder to write into.
        grids: ``LrSelection.grids``, so seeds of an LR-chosen config average together.

    Returns:
        The written paths and ``(name, why)`` for each run left out of a plot.
    """
    primary = _primary(task)
    runs, left_out = _plot_candidates(task, group)
    plotted, alone = plotted_comparisons(runs, grids)
    left_out += [(name, f"the only configuration at split '{_split_label(r)}', budget '{_budget(r)}'")
                 for name, r in alone]  # fmt: skip
    written = []
    for split, budget in plotted:
        trained = [
            (n, r) for n, r in runs if comparison(r) == (split, budget) and r.get("method") != "zero-shot"
        ]
        refs = reference_lines(group, split, primary)
        for axis, (xlabel, path, log) in AXES.items():
            usable, missing = _axis_runs(trained, axis)
            left_out += missing
            if not usable:
                continue
            kinds = (
                sorted({str(_get(r, "memory", "train", "kind")) for _, r in usable})
                if axis == "train_memory_gib"
                else []
            )
            label = xlabel + (f" [{', '.join(kinds)}]" if kinds else "")
            png = draw(plot_points(usable, path, grids), refs, metric=primary, xlabel=label,
                       title=f"{task}: test {primary} vs {xlabel} (split: {split}; budget: {budget})",
                       log=log)  # fmt: skip
            name = "_".join(filter(None, [task, _slug(primary), "vs", axis, _slug(split), _slug(budget)]))
            written.append(write_bytes_atomic(out / f"{name}.png", png))
    return written, left_out


def write_report(records: Records, out: str | Path) -> list[Path]:
    """Write the plots, ``report.md`` and ``results.csv`` into ``out``; returns the written paths."""
    out = Path(out)
    selection = select_lr(records)
    plots: dict[str, list[Path]] = {}
    left_out: list[tuple[str, str]] = []
    for task, group in _by_task(selection.kept).items():
        plots[task], missing = plot_task(task, group, out, selection.grids)
        left_out += missing
    report = write_bytes_atomic(out / "report.md", (markdown(records, plots, left_out) + "\n").encode())
    table = write_bytes_atomic(out / "results.csv", results_csv(records).encode())
    return [*(path for paths in plots.values() for path in paths), report, table]


def main(argv: list[str] | None = None) -> None:
    """Print the report for a folder of run records, or write it (Markdown, CSV, plots) with ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of run records, or a sweep's folder of run folders")
    parser.add_argument(
        "--out", type=Path, help="write report.md, results.csv and PNG plots into this folder"
    )
    args = parser.parse_args(argv)
    records = load_records(args.folder)
    if args.out is None:
        print(markdown(records))
        return
    for path in write_report(records, args.out):
        print(path)


if __name__ == "__main__":
    main()
