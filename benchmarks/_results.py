"""What every benchmark does with its rows: a CSV under ``benchmarks/results/`` and a table on stdout.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``:

    from _results import RESULTS, print_markdown, write_csv

    write_csv(RESULTS / "decode_batch.csv", rows)   # header: the first row's keys
    print_markdown(rows, ["batch", "tok_s"])
"""
from __future__ import annotations

import csv
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None, *, append: bool = False) -> None:
    """``rows`` as CSV at ``path``, its folder created; ``columns``: the first row's keys unless
    given. ``append``: a second table below the file's first one, after an empty line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", newline="") as f:
        if append:
            f.write("\n")
        w = csv.DictWriter(f, fieldnames=list(columns or rows[0]))
        w.writeheader()
        w.writerows(rows)


def print_markdown(rows: list[dict], columns: list[str] | None = None) -> None:
    """A Markdown table of ``columns`` (default: the first row's keys), after an empty line."""
    cols = list(columns or rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


def print_aligned(rows: list[dict], columns: list[str], fmt=str) -> None:
    """A plain-text table, every column padded to its widest cell (header included); ``fmt``
    turns a cell's value (None when the row lacks the column) into its text."""
    table = [list(columns)] + [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
