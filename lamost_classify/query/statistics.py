"""Counts and histograms of a selection, aggregated in DuckDB, as text or a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.dataset as ds

from ..pipeline.flags import Flag
from .catalog import open_catalog
from .errors import QueryError
from .sandbox import connect, first_line
from .selection import Selection, ident, selection_sql

HIST_BINS = 20


def stats(catalog: str | Path | ds.Dataset, selection: Selection | None = None) -> dict[str, Any]:
    """Counts and histograms of a selection: rows, per class (None = no class), per flag bit, our class
    against LAMOST's, and ``HIST_BINS``-bin histograms over [0, 1] of each class probability and of
    confidence. Computed by aggregation in DuckDB: nothing row-sized is kept."""
    selection = selection or Selection()
    dataset = catalog if isinstance(catalog, ds.Dataset) else open_catalog(catalog)
    where = selection_sql(selection, dataset.schema.names)
    limit = f" LIMIT {int(selection.limit)}" if selection.limit is not None else ""
    source = f"(SELECT * FROM catalog WHERE {where}{limit})"
    bits = ", ".join(
        f"sum(CASE WHEN (coalesce(flags, 0) & {int(f)}) <> 0 THEN 1 ELSE 0 END) AS {ident(f.name)}" for f in Flag
    )
    hist_cols = ["prob_star", "prob_galaxy", "prob_qso", "confidence"]
    with connect(dataset, selection.obsids) as con:
        try:
            total, flagged = con.execute(
                f"SELECT count(*), sum(CASE WHEN coalesce(flags, 0) <> 0 THEN 1 ELSE 0 END) FROM {source}"
            ).fetchone()
            by_class = con.execute(f'SELECT "class", count(*) FROM {source} GROUP BY ALL ORDER BY ALL').fetchall()
            flag_row = con.execute(f"SELECT {bits} FROM {source}").fetchone()
            versus = con.execute(
                f'SELECT "class", lamost_class, count(*) FROM {source} GROUP BY ALL ORDER BY ALL'
            ).fetchall()
            histograms: dict[str, list[int]] = {}
            for col in hist_cols:
                rows = con.execute(
                    f"SELECT least(floor({col} * {HIST_BINS}), {HIST_BINS - 1})::INTEGER AS b, count(*) "
                    f"FROM {source} WHERE {col} IS NOT NULL AND isfinite({col}) GROUP BY b"
                ).fetchall()
                counts = [0] * HIST_BINS
                for b, n in rows:
                    counts[min(max(int(b), 0), HIST_BINS - 1)] += n
                histograms[col] = counts
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None
    return {
        "rows": int(total),
        "flagged": int(flagged or 0),
        "classes": {str(c) if c is not None else "None": int(n) for c, n in by_class},
        "flags": {f.name: int(n or 0) for f, n in zip(Flag, flag_row)},
        "class_vs_lamost": [
            {"class": c, "lamost_class": lc, "rows": int(n)} for c, lc, n in versus
        ],
        "histogram_edges": [i / HIST_BINS for i in range(HIST_BINS + 1)],
        "histograms": histograms,
    }


def format_stats(result: dict[str, Any]) -> str:
    """``stats`` as plain text for a terminal."""
    lines = [f"rows      {result['rows']:>12,d}", f"flagged   {result['flagged']:>12,d}", "", "class"]
    for name, n in result["classes"].items():
        lines.append(f"  {name:<20s} {n:>12,d}")
    lines += ["", "flag bit"]
    for name, n in result["flags"].items():
        lines.append(f"  {name:<20s} {n:>12,d}")
    lines += ["", "class vs lamost_class"]
    for row in result["class_vs_lamost"]:
        lines.append(f"  {str(row['class']):<8s} {str(row['lamost_class']):<10s} {row['rows']:>12,d}")
    edges = result["histogram_edges"]
    lines += ["", "histograms (bin lower edge: rows)"]
    for col, counts in result["histograms"].items():
        cells = "  ".join(f"{edges[i]:.2f}:{n}" for i, n in enumerate(counts) if n)
        lines.append(f"  {col:<12s} {cells or '(no values)'}")
    return "\n".join(lines)


def plot_stats(result: dict[str, Any], path: str | Path) -> Path:
    """Write the probability histograms of ``stats`` as a PNG (log counts) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(result["histogram_edges"])
    fig, axes = plt.subplots(1, len(result["histograms"]), figsize=(4 * len(result["histograms"]), 3.2), sharey=True)
    for ax, (col, counts) in zip(np.atleast_1d(axes), result["histograms"].items()):
        ax.stairs(np.asarray(counts), edges, fill=True)
        ax.set_xlabel(col)
        if any(counts):
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5)
    np.atleast_1d(axes)[0].set_ylabel("rows")
    fig.suptitle(f"{result['rows']:,d} rows")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
