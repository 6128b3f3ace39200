"""LAMOST DR9 and later (v2.0 files): keywords-only primary HDU + binary table 'COADD' with one row of
array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION.

DR7 is served in this layout too, so the release string never decides: the 'COADD' table with a
WAVELENGTH column does (SDSS's 'COADD' has loglam instead), in a file whose header says LAMOST.
"""

from __future__ import annotations

from ..spectrum import Spectrum, SpectrumReadError
from .common import as_float32, as_mask, as_wavelength, lamost_header_meta
from .fitsfile import FitsFile
from .instrument import LAMOST, instrument

NAME = "lamost_coadd"


def identify(hdul: FitsFile) -> bool:
    if instrument(hdul.primary.header) != LAMOST:
        return False
    coadd = hdul.get("COADD")
    return coadd is not None and coadd.kind == "bintable" and "WAVELENGTH" in coadd.columns


def read(hdul: FitsFile, source: str) -> Spectrum:
    coadd = hdul["COADD"]
    nrows = coadd.int_keyword("NAXIS2")
    if nrows != 1:
        raise SpectrumReadError(f"{source}: the COADD table should hold one spectrum (one row), it has {nrows} rows")
    if "FLUX" not in coadd.columns or "IVAR" not in coadd.columns:
        raise SpectrumReadError(f"{source}: the COADD table lacks FLUX or IVAR (columns: {list(coadd.columns)})")
    flux = coadd.column("FLUX")[0]
    andmask = coadd.column("ANDMASK")[0] if "ANDMASK" in coadd.columns else flux * 0
    return Spectrum(
        wavelength=as_wavelength(coadd.column("WAVELENGTH")[0]),
        flux=as_float32(flux),
        ivar=as_float32(coadd.column("IVAR")[0]),
        andmask=as_mask(andmask),
        meta=lamost_header_meta(hdul.primary.header),
        source=source,
        layout=NAME,
    )
