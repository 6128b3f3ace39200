"""``lamost-classify query`` and ``lamost-classify export``: select rows of a finished catalog and write
them where astronomers work (terminal, CSV, Parquet, FITS, VOTable, HATS)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..pipeline.flags import Flag

# The columns a terminal table shows unless --columns says otherwise: all of them do not fit a screen.
TABLE_COLUMNS = (
    "obsid", "designation", "ra", "dec", "class", "confidence", "prob_star", "prob_galaxy", "prob_qso",
    "flags", "lamost_class",
)
TABLE_ROWS = 50


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated and comma-separated option values as one tuple."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _check_out(catalog_dir: Path, out: Path | None, overwrite: bool) -> None:
    """Before anything is read or written: the output lies outside the catalog, and is new or --overwrite."""
    from ..export import check_output_path
    from ..query import QueryError

    if out is None:
        return
    try:
        check_output_path(catalog_dir, out)
    except QueryError as exc:
        raise click.UsageError(str(exc)) from None
    if out.exists() and not overwrite:
        raise click.UsageError(f"{out} exists; pass --overwrite to replace it")


def _selection(
    classes, min_prob, min_confidence, flags, cone, obsid, disagree, where, columns, limit
):
    from ..query import Cone, QueryError, Selection, read_obsids

    try:
        return Selection(
            classes=_split(classes),
            min_prob=min_prob,
            min_confidence=min_confidence,
            flags=tuple(flags),
            cone=Cone(*cone) if cone else None,
            obsids=read_obsids(obsid) if obsid else None,
            disagree=disagree,
            where=where,
            columns=_split(columns) or None,
            limit=limit,
        )
    except QueryError as exc:
        raise click.UsageError(str(exc)) from exc


FLAG_HELP = (
    "Flag test, repeatable (all must hold): 'any' (some bit set), 'none' (no bit set), 'A,B' or "
    "'any:A,B' (A or B set), 'all:A,B', 'none:A,B'. Names: "
    + ", ".join(Flag.__members__)
    + ", UNUSABLE (no class)."
)


def _selection_options(f):
    options = [
        click.option("--class", "classes", multiple=True, metavar="CLASS",
                     help="STAR, GALAXY or QSO; repeat or comma-separate for several."),
        click.option("--min-prob", type=float, help="Probability of the --class class at least this."),
        click.option("--min-confidence", type=float,
                     help="confidence (the published class's probability) at least this."),
        click.option("--flags", multiple=True, metavar="TEST", help=FLAG_HELP),
        click.option("--cone", nargs=3, type=float, metavar="RA DEC RADIUS_ARCSEC",
                     help="Rows within RADIUS_ARCSEC of (RA, DEC) in deg; adds column dist_arcsec."),
        click.option("--obsid", multiple=True, metavar="OBSID|FILE",
                     help="An obsid, or a text file of them (one per line); repeatable."),
        click.option("--disagree", is_flag=True,
                     help="Our class differs from LAMOST's (both STAR/GALAXY/QSO)."),
        click.option("--where", metavar="SQL",
                     help="An SQL condition on the catalog's columns, e.g. \"snr_g > 10\"."),
        click.option("--columns", multiple=True, metavar="A,B,...", help="Columns to output (default all)."),
        click.option("--limit", type=click.IntRange(min=0), help="At most this many rows."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command("query")
@click.argument("catalog_dir", type=click.Path(exists=True, path_type=Path))
@_selection_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet", "fits", "votable"]),
              default="table", show_default=True, help="Output format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (csv and table may go to stdout).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--stats", "want_stats", is_flag=True,
              help="Counts per class and flag and probability histograms of the selection, not rows.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="With --stats: draw the histograms to this PNG.")
def query(catalog_dir, classes, min_prob, min_confidence, flags, cone, obsid, disagree, where, columns,
          limit, fmt, out, overwrite, want_stats, plot):
    """Select rows of the catalog in CATALOG_DIR.

    \b
    Examples:
      lamost-classify query catalog/ --class QSO --min-prob 0.9 --cone 150 2 3600
      lamost-classify query catalog/ --flags any --format csv --out flagged.csv
      lamost-classify query catalog/ --disagree --where "snr_g > 20" --format fits --out odd.fits
      lamost-classify query catalog/ --stats --plot stats.png
    """
    from ..export import write
    from ..query import QueryError, arrow_to_astropy, format_stats, open_catalog, plot_stats, select, stats

    selection = _selection(classes, min_prob, min_confidence, flags, cone, obsid, disagree, where, columns, limit)
    _check_out(catalog_dir, out, overwrite)
    if plot is not None and not want_stats:
        raise click.UsageError("--plot goes with --stats")
    _check_out(catalog_dir, plot, overwrite)
    try:
        dataset = open_catalog(catalog_dir)
        if want_stats:
            result = stats(dataset, selection)
            if out is not None:
                out.write_text(json.dumps(result, indent=1))
            else:
                click.echo(format_stats(result))
            if plot is not None:
                plot_stats(result, plot)
                click.echo(f"histograms drawn to {plot}", err=True)
            return
        if fmt == "table":
            import dataclasses

            if selection.columns is None:
                shown = TABLE_COLUMNS + (("dist_arcsec",) if selection.cone else ())
                selection = dataclasses.replace(selection, columns=shown)
            # Without --limit a terminal gets the first TABLE_ROWS rows and a note that there are more.
            shown_rows = TABLE_ROWS if selection.limit is None else selection.limit
            probe = shown_rows + 1 if selection.limit is None else shown_rows
            table = select(dataset, dataclasses.replace(selection, limit=probe)).read_all()
            more = table.num_rows > shown_rows
            text = "\n".join(arrow_to_astropy(table.slice(0, shown_rows)).pformat(max_lines=-1, max_width=-1))
            if more:
                text += f"\n(first {shown_rows} rows; use --limit N, or --format csv/parquet/fits for all)"
            if out is not None:
                out.write_text(text + "\n")
            else:
                click.echo(text)
            return
        rows = write(dataset, selection, fmt, out)
        if out is not None:
            click.echo(f"wrote {rows:,d} rows to {out}", err=True)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("export")
@click.argument("catalog_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["fits", "csv", "votable", "parquet", "hats"]),
              required=True, help="fits (TOPCAT), csv, votable, parquet (one file), hats (LSDB).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output file; for hats the folder that receives the HATS catalog.")
@click.option("--columns", multiple=True, metavar="A,B,...", help="Columns to export (default all; not hats).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--name", default="lamost_classify", show_default=True, help="hats: catalog name.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="hats: local Dask worker processes.")
@click.option("--max-order", type=click.IntRange(0, 19), default=7, show_default=True,
              help="hats: highest HEALPix order a partition may have.")
@click.option("--pixel-threshold", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="hats: at most this many rows per partition.")
def export(catalog_dir, fmt, out, columns, overwrite, name, workers, max_order, pixel_threshold):
    """Export the whole catalog in CATALOG_DIR, with units and descriptions, for TOPCAT or LSDB.

    For a subset, use `query ... --format fits|csv|parquet|votable --out FILE`.
    """
    from ..export import export_hats, write
    from ..query import QueryError, Selection

    try:
        if fmt == "hats":
            if columns:
                raise click.UsageError("--columns does not apply to hats (the HATS catalog keeps every column)")
            target = out / name
            result = export_hats(catalog_dir, out, name=name, workers=workers, pixel_threshold=pixel_threshold,
                                 highest_order=max_order, overwrite=overwrite)
            click.echo(
                f"wrote HATS catalog {target}: {result['rows']:,d} rows"
                + (f"; {result['dropped']:,d} rows without ra/dec left out" if result["dropped"] else ""),
                err=True,
            )
            return
        _check_out(catalog_dir, out, overwrite)
        rows = write(catalog_dir, Selection(columns=_split(columns) or None), fmt, out)
        click.echo(f"wrote {rows:,d} rows to {out}", err=True)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
