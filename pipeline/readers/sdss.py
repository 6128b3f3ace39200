"""SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits``: binary table 'COADD' (one row per pixel) with loglam, flux,
ivar, and_mask, or_mask; the pipeline's class and redshift in table 'SPECOBJ' (or 'SPALL') as CLASS,
SUBCLASS, Z. They land in lamost_class/lamost_subclass/lamost_z so a catalog compares them the same way.
Only files whose header says SDSS (TELESCOP = 'SDSS 2.5-M') are taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spectrum import META_KEYS, Spectrum, SpectrumReadError
from .common import as_float32, as_mask, to_float, to_int, to_str
from .fitsfile import HDU, FitsFile
from .instrument import SDSS, instrument

NAME = "sdss"
# SDSS pixel-mask bits (SPPIXMASK). SDSS's own redshift pipeline (idlspec2d skymask.pro) fits every pixel
# with ivar > 0 but those whose AND mask says BRIGHTSKY, grown by 2 pixels: the other bits describe the
# fibre or the CCD over pixels with good flux (MANYBADCOLUMNS marks the whole red half of some early
# plates). NOPLUG and NODATA pixels have no object light whatever their ivar says.
NOPLUG, BRIGHTSKY, NODATA = 1 << 0, 1 << 23, 1 << 24
BRIGHTSKY_GROW = 2


def sdss_pixel_mask(and_mask: np.ndarray) -> np.ndarray:
    """The AND mask reduced to the pixels SDSS leaves out: BRIGHTSKY grown by ``BRIGHTSKY_GROW`` pixels,
    NODATA, and NOPLUG (also what ``as_mask`` makes of a value that is not a number); their bits kept,
    0 elsewhere."""
    mask = as_mask(and_mask)
    sky = np.convolve((mask & BRIGHTSKY) != 0, np.ones(2 * BRIGHTSKY_GROW + 1), "same") > 0
    return np.where(sky, mask | BRIGHTSKY, np.where(mask & (NOPLUG | NODATA), mask, 0)).astype(np.int32)


def identify(hdul: FitsFile) -> bool:
    if instrument(hdul.primary.header) != SDSS:
        return False
    coadd = hdul.get("COADD")
    return coadd is not None and coadd.kind == "bintable" and "LOGLAM" in coadd.columns


def _first_row(table: HDU | None, column: str) -> Any:
    if table is None or column.upper() not in table.columns or table.int_keyword("NAXIS2") < 1:
        return None
    value = table.column(column)[0]
    return value.item() if isinstance(value, np.generic) else value


def sdss_meta(hdul: FitsFile) -> dict[str, Any]:
    header = hdul.primary.header
    specobj = hdul.get("SPECOBJ") or hdul.get("SPALL")

    def first(*candidates: tuple[str, str]) -> Any:
        """The first value found among (where, keyword) pairs; where is 'header' or 'specobj'."""
        for where, key in candidates:
            value = header.get(key) if where == "header" else _first_row(specobj, key)
            if value is not None:
                return value
        return None

    plate = to_int(first(("header", "PLATEID"), ("specobj", "PLATE")))
    mjd = to_int(first(("header", "MJD"), ("specobj", "MJD")))
    fiber = to_int(first(("header", "FIBERID"), ("specobj", "FIBERID")))
    run2d = to_str(first(("header", "RUN2D"), ("specobj", "RUN2D")))
    meta = {
        "designation": f"SDSS {plate:04d}-{mjd:05d}-{fiber:04d}" if None not in (plate, mjd, fiber) else None,
        "ra": to_float(first(("header", "PLUG_RA"), ("header", "RA"), ("specobj", "PLUG_RA"), ("specobj", "RA"))),
        "dec": to_float(first(("header", "PLUG_DEC"), ("header", "DEC"), ("specobj", "PLUG_DEC"), ("specobj", "DEC"))),
        "mjd": mjd,
        "planid": None if plate is None else str(plate),
        "fiberid": fiber,
        "lamost_class": to_str(_first_row(specobj, "CLASS")),
        "lamost_subclass": to_str(_first_row(specobj, "SUBCLASS")),
        "lamost_z": to_float(_first_row(specobj, "Z")),
        "release": "SDSS" if run2d is None else f"SDSS {run2d}",
    }
    return {key: meta.get(key) for key in META_KEYS}


def read(hdul: FitsFile, source: str) -> Spectrum:
    coadd = hdul["COADD"]
    for column in ("FLUX", "IVAR"):
        if column not in coadd.columns:
            raise SpectrumReadError(f"{source}: the SDSS COADD table has no {column} column ({list(coadd.columns)})")
    loglam = coadd.column("LOGLAM")
    if loglam.ndim != 1:
        raise SpectrumReadError(f"{source}: SDSS COADD loglam should be one value per row, got shape {loglam.shape}")
    flux = coadd.column("FLUX")
    andmask = coadd.column("AND_MASK") if "AND_MASK" in coadd.columns else np.zeros(flux.shape, np.int32)
    return Spectrum(
        wavelength=10.0 ** loglam.astype(np.float64),
        flux=as_float32(flux),
        ivar=as_float32(coadd.column("IVAR")),
        andmask=sdss_pixel_mask(andmask),
        meta=sdss_meta(hdul),
        source=source,
        layout=NAME,
    )
