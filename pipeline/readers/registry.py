"""Which reader takes which FITS file: each reader says whether it recognises the file's structure.

Like astropy's io registry, but small: a reader is (name, identify, read). ``identify(hdul) -> bool``
looks at the instrument the header names (TELESCOP/ORIGIN, ``instrument``) and at structure (which HDUs,
which columns, the row names, what row 2 of the image holds), never at the file name or DATA_V. The
built-in identifiers are mutually exclusive, so the order below only matters for readers added later
with ``register_reader``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..spectrum import Spectrum
from . import lamost_coadd, lamost_dr1, lamost_image, sdss, sdss_spspec
from .fitsfile import FitsFile


@dataclass(frozen=True)
class Reader:
    name: str
    identify: Callable[[FitsFile], bool]
    read: Callable[[FitsFile, str], Spectrum]


READERS: list[Reader] = [
    Reader(module.NAME, module.identify, module.read) for module in (lamost_coadd, sdss, sdss_spspec, lamost_image, lamost_dr1)
]


def register_reader(name: str, identify: Callable[[FitsFile], bool], read: Callable[[FitsFile, str], Spectrum]) -> None:
    """Add a reader for another FITS layout; it is asked before the built-in ones."""
    READERS.insert(0, Reader(name, identify, read))


def find_reader(hdul: FitsFile) -> Reader | None:
    """The first reader that recognises the file, None if none does."""
    for reader in READERS:
        if reader.identify(hdul):
            return reader
    return None
