"""Which instrument wrote a FITS file, and what its header says the image rows are.

Shape alone cannot choose a reader: an SDSS DR7 ``spSpec`` file is a (5, N) float image with
COEFF0/COEFF1, like a LAMOST DR1 file, but its row 2 is a continuum-subtracted spectrum and row 3 is
sigma. So every reader first asks whether the header names its instrument (TELESCOP, then ORIGIN), and
image readers check the row names when the file states them (LAMOST: EXTEN0; SDSS: ARRAY1..ARRAYn).
A file that names no instrument, or one no reader knows, is refused rather than read by its shape.
"""

from __future__ import annotations

import re

from .common import to_str
from .fitsfile import Header

LAMOST = "LAMOST"
SDSS = "SDSS"
# What the known instruments write, for the message that refuses an unknown one.
KNOWN = "LAMOST (TELESCOP = 'LAMOST', ORIGIN = 'NAOC-LAMOST') and SDSS (TELESCOP = 'SDSS 2.5-M')"


def instrument(header: Header) -> str | None:
    """LAMOST or SDSS when TELESCOP names one; else the TELESCOP text as written; ORIGIN (who wrote the
    file) only stands in when TELESCOP is absent; None when the header has neither."""
    named = to_str(header.get("TELESCOP")) or to_str(header.get("ORIGIN"))
    if named is None:
        return None
    upper = named.upper()
    if "LAMOST" in upper:
        return LAMOST
    if upper.startswith("SDSS"):
        return SDSS
    return named


def describe_instrument(header: Header) -> str:
    """The header's own words about its instrument, for error messages."""
    cards = [f"{key} = {header.get(key)!r}" for key in ("TELESCOP", "ORIGIN") if to_str(header.get(key))]
    return ", ".join(cards) or "no TELESCOP or ORIGIN keyword"


def lamost_row_names(header: Header) -> list[str] | None:
    """The image rows as a LAMOST header names them (EXTEN0 'Flux, Inverse, Wavelength, Andmask, Ormask'),
    lower-cased; None when the header does not say."""
    text = to_str(header.get("EXTEN0"))
    return [word.lower() for word in re.split(r"[\s,]+", text) if word] if text else None


def sdss_row_names(header: Header) -> list[str] | None:
    """The image rows as an SDSS spSpec header names them (ARRAY1 = 'SPECTRUM', ...), upper-cased; None
    when ARRAY1 is absent."""
    names = []
    for i in range(1, 10):
        name = to_str(header.get(f"ARRAY{i}"))
        if name is None:
            break
        names.append(name.upper())
    return names or None
