"""The in-memory form of one spectrum, whatever file layout it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Metadata keys every reader fills (None when the file does not say). Catalog columns come from these.
META_KEYS: tuple[str, ...] = (
    "obsid", "designation", "ra", "dec", "lmjd", "mjd", "planid", "spid", "fiberid", "obsdate",
    "snr_u", "snr_g", "snr_r", "snr_i", "snr_z",
    "lamost_class", "lamost_subclass", "lamost_z", "release",
)


@dataclass
class Spectrum:
    """One spectrum on its native grid.

    ``wavelength`` is in Angstrom (vacuum for LAMOST), ``flux`` and ``ivar`` are native-endian float32,
    ``andmask`` is the pixel mask (non-zero = bad; zeros when the file has none). ``flags`` holds the
    quality bits the reader already knows (see ``pipeline.flags``).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    andmask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    layout: str = ""
    flags: int = 0

    def __post_init__(self) -> None:
        for key in META_KEYS:
            self.meta.setdefault(key, None)


class SpectrumReadError(Exception):
    """A file that cannot be turned into a Spectrum; the message says why, in words a user can act on."""
