"""LAMOST DR2-DR8: the primary HDU is a (5, N) image of flux, ivar, wavelength, andmask, ormask.

The image is float32 or float64, big-endian, and named 'Flux' in some files. DR1 files have the same
image with a sub-continuum in row 2 (``lamost_dr1``); the two are told apart by what row 2 holds, and by
the row names (EXTEN0) when the header gives them. Only files whose header says LAMOST are taken: an SDSS
spSpec image has the same shape (``instrument``).
"""

from __future__ import annotations

import numpy as np

from ..spectrum import Spectrum, SpectrumReadError
from .common import as_float32, as_mask, as_wavelength, lamost_header_meta
from .fitsfile import FitsFile, Header
from .instrument import LAMOST, instrument, lamost_row_names, sdss_row_names

NAME = "lamost_image"
FLUX, IVAR, WAVELENGTH, ANDMASK = 0, 1, 2, 3
# Row 2 counts as wavelength when it stays within this many native pixels of the header's COEFF0/COEFF1.
MAX_PIXEL_OFFSET = 5


def primary_rows(hdul: FitsFile) -> np.ndarray | None:
    """The primary image when it has the LAMOST shape (at least flux, ivar, row 2, andmask), else None."""
    primary = hdul.primary
    if not primary.has_data or len(primary.shape) != 2 or not 4 <= primary.shape[0] <= 5:
        return None
    return primary.data


def lamost_rows(hdul: FitsFile, row_2: str) -> np.ndarray | None:
    """The primary image of a LAMOST file with the LAMOST shape, whose row names (when the header gives
    them) are flux, inverse variance and ``row_2`` ('wavelength' or 'subcontinuum'); else None. Rows
    named the SDSS way (ARRAYn) are not LAMOST's, whatever TELESCOP says."""
    header = hdul.primary.header
    if instrument(header) != LAMOST or sdss_row_names(header) is not None:
        return None
    names = lamost_row_names(header)
    if names is not None and names[:3] != ["flux", "inverse", row_2]:
        return None
    return primary_rows(hdul)


def row_is_wavelength(row: np.ndarray, header: Header) -> bool:
    """Whether row 2 is a wavelength array: positive, increasing, on the header's log-linear grid if it has one."""
    with np.errstate(all="ignore"):  # row 2 may hold anything; garbage just means "not wavelength"
        row = np.asarray(row, dtype=np.float64)
        if row.size < 2 or not np.all(np.isfinite(row)) or row[0] <= 0 or not np.all(np.diff(row) > 0):
            return False
        coeff0, coeff1 = header.get("COEFF0"), header.get("COEFF1")
        if isinstance(coeff0, (int, float)) and isinstance(coeff1, (int, float)) and coeff1 > 0:
            model = coeff0 + coeff1 * np.arange(row.size)
            return bool(np.max(np.abs(np.log10(row) - model)) < MAX_PIXEL_OFFSET * coeff1)
        return bool(1000.0 < row[0] and row[-1] < 30000.0)  # Angstrom: optical to near-infrared


def identify(hdul: FitsFile) -> bool:
    rows = lamost_rows(hdul, "wavelength")
    return rows is not None and row_is_wavelength(rows[WAVELENGTH], hdul.primary.header)


def read(hdul: FitsFile, source: str) -> Spectrum:
    rows = primary_rows(hdul)
    if rows is None:
        raise SpectrumReadError(f"{source}: the primary HDU is not a (5, N) LAMOST image ({hdul.describe()})")
    return Spectrum(
        wavelength=as_wavelength(rows[WAVELENGTH]),
        flux=as_float32(rows[FLUX]),
        ivar=as_float32(rows[IVAR]),
        andmask=as_mask(rows[ANDMASK]),
        meta=lamost_header_meta(hdul.primary.header),
        source=source,
        layout=NAME,
    )
