"""LAMOST DR1: the DR2-DR8 image, but row 2 is a sub-continuum (values near 1), not wavelength.

The wavelength comes from the header's log-linear solution: lambda_i = 10**(COEFF0 + COEFF1 * i).
This reader takes every LAMOST 5-row image whose row 2 is not a wavelength array (``lamost_image.identify``)
and whose row names, when the header gives them, say Subcontinuum.
"""

from __future__ import annotations

from ..spectrum import Spectrum, SpectrumReadError
from .common import as_float32, as_mask, lamost_header_meta, log_linear_wavelength
from .fitsfile import FitsFile
from .lamost_image import ANDMASK, FLUX, IVAR, WAVELENGTH, lamost_rows, primary_rows, row_is_wavelength

NAME = "lamost_dr1"


def identify(hdul: FitsFile) -> bool:
    rows = lamost_rows(hdul, "subcontinuum")
    return rows is not None and not row_is_wavelength(rows[WAVELENGTH], hdul.primary.header)


def read(hdul: FitsFile, source: str) -> Spectrum:
    rows = primary_rows(hdul)
    if rows is None:
        raise SpectrumReadError(f"{source}: the primary HDU is not a (5, N) LAMOST image ({hdul.describe()})")
    header = hdul.primary.header
    # CRVAL1/CD1_1 carry the same solution in the files seen; COEFF0/COEFF1 are LAMOST's own names.
    coeff0 = header.get("COEFF0", header.get("CRVAL1"))
    coeff1 = header.get("COEFF1", header.get("CD1_1"))
    if not isinstance(coeff0, (int, float)) or not isinstance(coeff1, (int, float)) or coeff1 <= 0:
        raise SpectrumReadError(
            f"{source}: row 2 of the image is not wavelength (DR1 layout) and the header has no usable "
            f"COEFF0/COEFF1 (got {coeff0!r}, {coeff1!r}) to rebuild it from"
        )
    return Spectrum(
        wavelength=log_linear_wavelength(float(coeff0), float(coeff1), rows.shape[1]),
        flux=as_float32(rows[FLUX]),
        ivar=as_float32(rows[IVAR]),
        andmask=as_mask(rows[ANDMASK]),
        meta=lamost_header_meta(header),
        source=source,
        layout=NAME,
    )
