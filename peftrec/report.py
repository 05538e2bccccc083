"""Derive a Markdown table from run records: ``python -m peftrec.report benchmarks/results``.

Tables are derived from the records, never edited by hand. A record with missing fields is still
listed, with ``-`` where a value is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = ("run", "method", "model", "test AUC [95% CI by user]", "trainable params", "train samples/s",
           "eval samples/s", "peak memory", "wall", "device")


def load_records(folder: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Read every ``*.json`` run record in ``folder`` (sorted by file name)."""
    return [(path.stem, json.loads(path.read_text())) for path in sorted(Path(folder).glob("*.json"))]


def _get(record: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row(name: str, record: dict[str, Any]) -> list[str]:
    """One table row for a run record."""
    auc = _get(record, "metrics", "test", "auc")
    ci = _get(record, "metrics", "test_ci95_by_user", "auc")
    memory = _get(record, "memory", "train") or _get(record, "memory", "eval") or {}
    trainable = _get(record, "params", "trainable")
    return [
        name,
        str(record.get("method", "-")),
        str(record.get("model", "-")),
        f"{_fmt(auc, '.3f')}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
        _fmt(trainable, ","),
        _fmt(_get(record, "speed", "train_samples_per_s"), ".2f"),
        _fmt(_get(record, "speed", "eval_samples_per_s"), ".2f"),
        f"{memory['gib']:.2f} GiB ({memory.get('kind', '?')})" if memory.get("gib") is not None else "-",
        f"{record['wall_seconds'] / 60:.1f} min" if record.get("wall_seconds") is not None else "-",
        str(_get(record, "device", "name") or "-"),
    ]


def baseline_rows(records: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """Rows for the trivial baselines, once per distinct split (same fingerprint, same numbers)."""
    rows, seen = [], set()
    for _, record in records:
        fingerprint = _get(record, "split", "fingerprint")
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        for name, values in (record.get("baselines_test") or {}).items():
            rows.append([f"baseline: {name}", "trivial", "-", _fmt(values.get("auc"), ".3f"), "0", "-", "-", "-", "-", "-"])
    return rows


def markdown(records: list[tuple[str, dict[str, Any]]]) -> str:
    """The Markdown table of all records, followed by the trivial baselines on their splits."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(name, record)) + " |" for name, record in records]
    lines += ["| " + " | ".join(cells) + " |" for cells in baseline_rows(records)]
    return "\n".join(lines)


def main() -> None:
    """Print the table for a folder of run records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of run records (result.json copies)")
    args = parser.parse_args()
    print(markdown(load_records(args.folder)))


if __name__ == "__main__":
    main()
