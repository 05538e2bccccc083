"""Recommend with a saved head from the command line: ``python -m peftrec.recommend adapter=... user=<id>``.

One user (prints the top-K as a table)::

    python -m peftrec.recommend adapter=outputs/lora_click/2026-11-24_03-59-41/adapter user=196 max_candidates=200
    python -m peftrec.recommend adapter=you/peftrec-lora-click history='["Toy Story (1995)", "Heat (1995)"]'
    python -m peftrec.recommend adapter=... history='{"Toy Story (1995)": 5, "Heat (1995)": 2}' top_k=5

Many users (one id per line; writes CSV or JSONL by the output's extension, atomically, with a
progress bar)::

    python -m peftrec.recommend adapter=... users_file=users.txt output=recs.csv

Options (``key=value``; lists and mappings in YAML/JSON): ``adapter`` (folder or Hub repo id, required),
``user``, ``history``, ``users_file``, ``output`` (.csv or .jsonl), ``top_k`` (10), ``candidates``,
``max_candidates`` (rank only the this-many most popular unseen items: click and rating cost one
forward pass per candidate), ``exclude``, ``precision`` (auto|bf16|fp32), ``device``, ``batch_size``,
and ``data.<key>=...`` to replace part of the recipe's data section (e.g. ``data.interactions=new.csv``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from peftrec.atomic import staged_file
from peftrec.errors import PeftrecError

USAGE = (
    "python -m peftrec.recommend adapter=<folder or owner/name> (user=<id> | history=[items] | "
    "users_file=<file> output=<recs.csv|recs.jsonl>) [top_k=10] [max_candidates=N]"
)
OPTIONS = {
    "adapter", "user", "history", "users_file", "output", "top_k", "candidates", "max_candidates",
    "exclude", "precision", "device", "batch_size", "data",
}  # fmt: skip
FORMATS = (".csv", ".jsonl")


def parse_options(argv: list[str], allowed: set[str], usage: str) -> dict[str, Any]:
    """Parse ``key=value`` arguments (values in YAML: numbers, lists, mappings), checking the keys.

    Args:
        argv: the arguments.
        allowed: the known top-level keys (``data`` also takes ``data.<key>=...``).
        usage: the usage line, for error messages.

    Returns:
        The options as plain Python values.

    Raises:
        PeftrecError: an argument without ``=``, an unknown key, or a value YAML cannot read.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [a for a in argv if "=" not in a]
    if bad:
        raise PeftrecError(f"arguments are key=value, got {bad[0]!r}: {usage}")
    try:
        options = OmegaConf.to_container(OmegaConf.from_dotlist(list(argv)), resolve=True)
    except (OmegaConfBaseException, ValueError) as err:
        raise PeftrecError(
            f"cannot read the arguments ({err}): quote lists, e.g. history='[\"A (1995)\"]'"
        ) from err
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PeftrecError(f"unknown option {unknown[0]!r}: the options are {', '.join(sorted(allowed))}")
    return options


def read_users(path: str | Path) -> list[str]:
    """User ids from a text file, one per line (blank lines and ``#`` comments skipped).

    Raises:
        PeftrecError: the file is missing or lists no user.
    """
    path = Path(path)
    if not path.is_file():
        raise PeftrecError(f"users_file={path} does not exist: give a text file with one user id per line")
    users = [line.strip() for line in path.read_text().splitlines()]
    users = [u for u in users if u and not u.startswith("#")]
    if not users:
        raise PeftrecError(f"users_file={path} lists no user: write one user id per line")
    return users


def write_recommendations(frames: Iterable[pd.DataFrame], path: str | Path) -> int:
    """Write per-user recommendation frames to CSV or JSONL (one row per recommended item), atomically.

    Rows stream into a temporary file beside ``path``, which replaces ``path`` only once complete: a
    crash or Ctrl-C never leaves a half-written file under the real name.

    Args:
        frames: frames with ``user_id``, ``rank``, ``item_id``, ``title``, ``score``.
        path: ``*.csv`` or ``*.jsonl``.

    Returns:
        The number of rows written.

    Raises:
        PeftrecError: another extension.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PeftrecError(f"output={path}: use a .csv or .jsonl file name")
    columns = ["user_id", "rank", "item_id", "title", "score"]
    rows = 0
    with staged_file(path) as partial, partial.open("w", newline="") as out:
        for k, frame in enumerate(frames):
            frame = frame[columns]
            if path.suffix.lower() == ".csv":
                frame.to_csv(out, index=False, header=k == 0)
            else:
                for record in frame.to_dict(orient="records"):
                    out.write(json.dumps(_plain(record)) + "\n")
            rows += len(frame)
        if rows == 0 and path.suffix.lower() == ".csv":
            out.write(",".join(columns) + "\n")
    return rows


def format_table(frame: pd.DataFrame) -> str:
    """A Markdown table of one user's recommendations (rank, item id, title, score)."""
    lines = ["| rank | item_id | title | score |", "|---|---|---|---|"]
    for row in frame.itertuples(index=False):
        lines.append(f"| {row.rank} | {row.item_id} | {row.title} | {row.score:.4f} |")
    return "\n".join(lines)


def _plain(record: dict) -> dict:
    # numpy scalars are not JSON; the ids stay strings.
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def _progress(frames: Iterator[pd.DataFrame], total: int) -> Iterator[pd.DataFrame]:
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="user", desc="Recommending", file=sys.stderr) as bar:
        for frame in frames:
            yield frame
            bar.update(1)


def run(options: dict[str, Any]) -> str:
    """Load the recommender and answer: a table for one request, a file for a users file.

    Returns:
        What to print.
    """
    from peftrec.recommender import Recommender

    if options.get("adapter") in (None, ""):
        raise PeftrecError(f"adapter= is required: {USAGE}")
    single = options.get("user") is not None or options.get("history") is not None
    if options.get("users_file") is not None and single:
        raise PeftrecError("give users_file= alone, or user= / history= for one request, not both")
    if not single and options.get("users_file") is None:
        raise PeftrecError(f"say whose recommendations: {USAGE}")
    if options.get("users_file") is not None and not options.get("output"):
        raise PeftrecError("users_file= needs output=<recs.csv or recs.jsonl>")
    if options.get("output") and Path(str(options["output"])).suffix.lower() not in FORMATS:
        raise PeftrecError(f"output={options['output']}: use a .csv or .jsonl file name")
    users = read_users(options["users_file"]) if options.get("users_file") is not None else None

    rec = Recommender.from_pretrained(
        str(options["adapter"]),
        data=options.get("data"),
        device=options.get("device"),
        precision=str(options.get("precision") or "auto"),
        batch_size=options.get("batch_size"),
    )
    common = {
        "top_k": int(options.get("top_k") or 10),
        "candidates": options.get("candidates"),
        "max_candidates": options.get("max_candidates"),
    }
    if users is not None:
        frames = rec.iter_recommendations(users, **common)
        rows = write_recommendations(_progress(frames, len(users)), options["output"])
        return f"Wrote {rows} recommendations for {len(users)} users to {options['output']}"
    user = options.get("user")
    frame = rec.recommend(
        None if user is None else str(user),
        history=options.get("history"),
        exclude=options.get("exclude") or (),
        **common,
    )
    if options.get("output"):
        rows = write_recommendations([frame.assign(user_id=user)], options["output"])
        return f"Wrote {rows} recommendations to {options['output']}"
    head = rec.heads[rec.adapter_names[0]]
    who = f"user {user}" if user is not None else "the given history"
    return f"Top {len(frame)} for {who} ({head.task.name} task, {head.source}):\n{format_table(frame)}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``python -m peftrec.recommend adapter=... user=...``."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        print(run(parse_options(argv, OPTIONS, USAGE)))
    except PeftrecError as err:
        # The input is at fault, not the code: the message names the fix; a traceback would bury it.
        print(f"peftrec: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
