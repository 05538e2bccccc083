"""Print the per-task tables of benchmarks/README.md's "Every head × the three tasks" section from the records.

    python benchmarks/scripts/heads_tasks_tables.py [benchmarks/results]

Reads the records of 24 steps x 16 on the CPU (Gemma's included) and the CPU zero-shot records on the same
test rows, groups seeds of one configuration the way the report does (``peftrec.report.seed_groups``:
equal configs but the seed, a learning rate being part of the config) and prints one Markdown table per task:
the mean ± standard deviation over seeds, the first seed's value and 95% interval by user, the secondary
metric (mean over seeds), the training speed (mean over seeds), the peak RSS (largest over seeds) and the
commit of each record (``+``: the working tree had uncommitted edits when the run started).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from peftrec.report import METRICS, comparison, load_records, seed_groups

HEADS = ["lora", "adalora", "ia3", "adapter", "prefix", "prompt_tuning", "qlora", "zero-shot"]
TITLES = {
    "click": "Click (TALLRec split, 1,000 test rows, 34 users)",
    "rating": "Rating (per-user leave-one-out, a fixed draw of 200 test users)",
    "generative": "Next item (whole catalog, constrained beam search, a fixed draw of 50 test users)",
}


def _get(record: dict, *keys: str):
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def selected(records):
    """The suite's records: 24x16 on the CPU, and zero-shot runs on the CPU on the same test rows."""
    trained = [
        (n, r) for n, r in records if r.get("method") != "baselines" and comparison(r)[1] == "24x16 cpu"
    ]
    splits = {(r.get("task"), comparison(r)[0]) for _, r in trained}
    zero_shot = [
        (n, r)
        for n, r in records
        if r.get("steps") == 0
        and comparison(r) in {(split, "zero-shot cpu") for task, split in splits if task == r.get("task")}
    ]
    return trained + zero_shot


def commit(record: dict) -> str:
    git = record.get("git") or {}
    return (git.get("commit") or "?")[:7] + ("+" if git.get("dirty") else "")


def table(task: str, groups: dict) -> list[str]:
    primary, secondary = METRICS[task]
    rows = []
    for key, members in groups.items():
        if key[0] != task:
            continue
        members = sorted(members, key=lambda m: m[1].get("seed", 0))
        records = [r for _, r in members]
        first = records[0]
        values = [_get(r, "metrics", "test", primary) for r in records]
        mean = f"{statistics.mean(values):.3f}" + (
            f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        )
        ci = _get(first, "metrics", "test_ci95_by_user", primary)
        speeds = [_get(r, "speed", "train_samples_per_s") for r in records]
        speeds = [s for s in speeds if s]
        rss = max(
            (_get(r, "memory", "train", "gib") or _get(r, "memory", "eval", "gib") or 0) for r in records
        )
        lr = _get(first, "config", "trainer", "optimizer", "lr") if first.get("steps") else None
        rows.append(
            (
                HEADS.index(first["method"]) if first["method"] in HEADS else len(HEADS),
                first.get("model", ""),
                lr or 0,
                [
                    first["method"],
                    first.get("model", "-").removesuffix("-instruct"),
                    f"{first['params']['trainable']:,}",
                    f"{lr:g}" if lr else "-",
                    ",".join(str(r.get("seed")) for r in records),
                    mean,
                    f"{values[0]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                    f"{statistics.mean(_get(r, 'metrics', 'test', secondary) for r in records):.3f}",
                    f"{statistics.mean(speeds):.2f}" if speeds else "-",
                    f"{rss:.2f} GiB",
                    ", ".join(dict.fromkeys(commit(r) for r in records)),
                ],
            )
        )
    rows.sort(key=lambda row: (row[1] != "smollm2-135m-instruct", row[0], row[2]))
    header = ["head", "model", "trainable params", "lr", "seeds", f"test {primary} (mean ± std over seeds)",
              "first seed [95% CI by user]", f"test {secondary}", "train samples/s", "peak RSS", "commit"]  # fmt: skip
    out = [f"**{TITLES[task]}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for *_, cells in rows]
    trained = [r for key, members in groups.items() if key[0] == task for _, r in members if r.get("steps")]
    if trained:  # every trained record of the task scores the baselines on the same test rows
        baselines = trained[0].get("baselines_test") or {}
        scores = ", ".join(
            f"{name} {values[primary]:.3f}" for name, values in baselines.items() if primary in values
        )
        out += ["", f"Baselines on the same rows: {scores or '-'}"]
        out.append(
            f"Test rows / users: {_get(trained[0], 'examples', 'test')} / {_get(trained[0], 'users', 'test')}"
        )
    return out


def main(folder: str = "benchmarks/results") -> None:
    groups = seed_groups(selected(load_records(Path(folder))))
    print("\n\n".join("\n".join(table(task, groups)) for task in TITLES))


if __name__ == "__main__":
    main(*sys.argv[1:])
