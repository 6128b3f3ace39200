"""SDSS DR7 (and earlier) ``spSpec-MJD-PLATE-FIBER.fit``: a (5, N) float image like a LAMOST DR1 file,
but with other rows, named in the header: ARRAY1 SPECTRUM, ARRAY2 CONTINUUM-SUBTRACTED SPECTRUM,
ARRAY3 ERROR (sigma, not ivar), ARRAY4 MASK. Wavelength from COEFF0/COEFF1 (log-linear), in vacuum
(VACUUM = T) like LAMOST's; a file that says VACUUM = F is converted from air. The pipeline's class is
SPEC_CLN (a number), its redshift Z; RAOBJ/DECOBJ place the object (RA/DEC are the plate centre).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spectrum import META_KEYS, Spectrum, SpectrumReadError
from .common import as_float32, log_linear_wavelength, to_float, to_int, to_str
from .fitsfile import FitsFile
from .instrument import SDSS, instrument, sdss_row_names
from .sdss import sdss_pixel_mask

NAME = "sdss_spspec"
FLUX, SIGMA, MASK = 0, 2, 3
ROW_NAMES = ("SPECTRUM", "CONTINUUM-SUBTRACTED SPECTRUM", "ERROR", "MASK")
# SPEC_CLN codes (SDSS DR7 spectro1d) -> (class, subclass); the subclass only where it says more.
SPEC_CLN = {
    0: ("UNKNOWN", None), 1: ("STAR", None), 2: ("GALAXY", None), 3: ("QSO", None), 4: ("QSO", "HIZ_QSO"),
    5: ("SKY", None), 6: ("STAR", "STAR_LATE"), 7: ("GALAXY", "GAL_EM"),
}


def identify(hdul: FitsFile) -> bool:
    primary = hdul.primary
    names = sdss_row_names(primary.header)
    return (
        instrument(primary.header) == SDSS
        and names is not None and tuple(names[: len(ROW_NAMES)]) == ROW_NAMES
        and primary.has_data and len(primary.shape) == 2 and primary.shape[0] >= len(ROW_NAMES)
    )


def air_to_vacuum(wavelength: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths (Angstrom) from air ones: the inverse of the IAU standard (Morton 2000), N. Piskunov's
    fit as used by VALD and SDSS."""
    s2 = (1e4 / wavelength) ** 2
    n = 1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2) + 1.599740894897e-4 / (38.92568793293 - s2)
    return wavelength * n


def spspec_meta(header: Any) -> dict[str, Any]:
    plate, mjd, fiber = to_int(header.get("PLATEID")), to_int(header.get("MJD")), to_int(header.get("FIBERID"))
    code = to_int(header.get("SPEC_CLN"))
    spec_class, subclass = SPEC_CLN.get(code, (None if code is None else f"SPEC_CLN {code}", None))
    version = to_str(header.get("VERS2D"))
    meta = {
        "designation": f"SDSS {plate:04d}-{mjd:05d}-{fiber:04d}" if None not in (plate, mjd, fiber) else None,
        "ra": to_float(header.get("RAOBJ")),
        "dec": to_float(header.get("DECOBJ")),
        "mjd": mjd,
        "planid": None if plate is None else str(plate),
        "spid": to_int(header.get("SPECID")),
        "fiberid": fiber,
        "obsdate": to_str(header.get("DATE-OBS")),
        "snr_g": to_float(header.get("SN_G")),
        "snr_r": to_float(header.get("SN_R")),
        "snr_i": to_float(header.get("SN_I")),
        "lamost_class": spec_class,
        "lamost_subclass": subclass,
        "lamost_z": to_float(header.get("Z")),
        "release": "SDSS" if version is None else f"SDSS {version}",
    }
    return {key: meta.get(key) for key in META_KEYS}


def read(hdul: FitsFile, source: str) -> Spectrum:
    header = hdul.primary.header
    rows = hdul.primary.data
    coeff0, coeff1 = header.get("COEFF0"), header.get("COEFF1")
    if not isinstance(coeff0, (int, float)) or not isinstance(coeff1, (int, float)) or coeff1 <= 0:
        raise SpectrumReadError(
            f"{source}: an SDSS spSpec file without a usable COEFF0/COEFF1 (got {coeff0!r}, {coeff1!r}): "
            "its wavelengths cannot be rebuilt"
        )
    wavelength = log_linear_wavelength(float(coeff0), float(coeff1), rows.shape[1])
    if header.get("VACUUM") is False:
        wavelength = air_to_vacuum(wavelength)
    sigma = np.asarray(rows[SIGMA], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # sigma <= 0 is how spSpec marks pixels without data; NaN sigma stays NaN and is flagged later.
        ivar = np.where(sigma > 0, 1.0 / sigma**2, np.where(np.isnan(sigma), np.nan, 0.0))
    return Spectrum(
        wavelength=wavelength,
        flux=as_float32(rows[FLUX]),
        ivar=as_float32(ivar),
        andmask=sdss_pixel_mask(rows[MASK]),
        meta=spspec_meta(header),
        source=source,
        layout=NAME,
    )
