"""``lamost-classify simulate``: labelled mock LAMOST spectra, as a data-release tree or one Parquet table."""

from __future__ import annotations

import time
from pathlib import Path

import click


def _parse_mix(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected three numbers like 0.985,0.012,0.003, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise click.BadParameter(f"expected three non-negative fractions STAR,GALAXY,QSO, got {text!r}")
    return parts  # type: ignore[return-value]


@click.command("simulate")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of mock spectra.")
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed: same seed, same mocks.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Release root directory (--format release) or .parquet file (--format parquet).")
@click.option("--format", "fmt", type=click.Choice(["release", "parquet"]), default="release", show_default=True)
@click.option("--layout", type=click.Choice(["v2", "dr2-8", "dr1"]), default="v2", show_default=True,
              help="FITS layout of a release: v2 (DR9+ COADD table), dr2-8 (5-row image), dr1.")
@click.option("--balanced", is_flag=True, help="Equal thirds of STAR, GALAXY, QSO (for training).")
@click.option("--mix", "mix", default="0.985,0.012,0.003", show_default=True,
              help="STAR,GALAXY,QSO fractions (the survey's by default).")
@click.option("--templates", "templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Template directory (sdss/, redrock/, igm/); default ../shared/data/templates, "
                   "else the built-in analytic library.")
@click.option("--noise", "noise", default=None,
              help="Noise donors: a directory of real LAMOST files, or 'summary' for the shipped summary; "
                   "default: ../shared/data/lamost when present, else the summary.")
@click.option("--snr-min", type=float, default=2.0, show_default=True, help="Lowest g-band S/N drawn.")
@click.option("--snr-max", type=float, default=300.0, show_default=True, help="Highest g-band S/N drawn.")
@click.option("--snr-distribution", type=click.Choice(["real", "loguniform", "donor"]), default="real", show_default=True,
              help="real: the S/N distribution of real LAMOST files; loguniform: flat in log S/N; donor: each noise donor's own.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--figure", "figure", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also draw mocks of each class next to real LAMOST spectra of similar S/N into this PNG.")
def simulate(n: int, seed: int, out: Path, fmt: str, layout: str, balanced: bool, mix: str, templates: Path | None,
             noise: str | None, snr_min: float, snr_max: float, snr_distribution: str, chunk_size: int,
             figure: Path | None) -> None:
    """Write N labelled mock LAMOST spectra made from real templates and real LAMOST noise.

    \b
    Examples:
      lamost-classify simulate --n 100000 --seed 1 --balanced --format parquet --out train.parquet
      lamost-classify simulate --n 4000 --seed 2 --out mockrelease/ --layout dr2-8
    """
    from tqdm import tqdm

    from lamost_classify.mocks.release import write_parquet, write_release
    from lamost_classify.mocks.simulate import BALANCED, Simulator, simulate as run_simulate

    if snr_min <= 0 or snr_max <= snr_min:
        raise click.BadParameter("need 0 < --snr-min < --snr-max")
    class_mix = BALANCED if balanced else _parse_mix(mix)
    try:
        sim = Simulator(templates_dir=templates, noise=noise, class_mix=class_mix, snr_distribution=snr_distribution,
                        snr_range=(snr_min, snr_max))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"templates: {sim.templates.source}; noise donors: {len(sim.library)} ({sim.library.source})", err=True)
    chunks = run_simulate(n, seed, chunk_size=chunk_size, simulator=sim)
    t0 = time.perf_counter()
    with tqdm(total=n, unit="spec", desc="simulate", disable=None) as bar:
        if fmt == "parquet":
            if out.suffix != ".parquet":
                out = out.with_suffix(".parquet")
            write_parquet(chunks, out, seed, progress=bar.update)
            written = f"{out}"
        else:
            paths = write_release(chunks, out, seed, layout=layout, progress=bar.update)
            written = f"{paths['root']} (catalog {paths['catalog'].name}, truth {paths['truth'].name})"
    dt = time.perf_counter() - t0
    click.echo(f"wrote {n} spectra to {written} in {dt:.1f} s: {n / dt:.0f} spectra/s")
    if figure is not None:
        from lamost_classify.mock_figures import mock_vs_real_figure

        mock_vs_real_figure(figure, seed=seed, simulator=sim)
        click.echo(f"figure: {figure}")
