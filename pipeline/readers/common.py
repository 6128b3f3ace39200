"""What every reader shares: array conversion, log-linear wavelength grids and header metadata."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..flags import Flag
from ..spectrum import META_KEYS, Spectrum, SpectrumReadError

# Metadata without which a catalog row cannot be matched to anything else.
REQUIRED_META = ("obsid", "ra", "dec")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


# --- arrays: converted to native byte order exactly once, here ---


def as_float32(values: np.ndarray) -> np.ndarray:
    """A native-endian, writable float32 copy (the file's data are big-endian and read-only).

    float64 values beyond float32's range become inf, which grid.prepare masks and flags."""
    values = np.asarray(values)
    if values.dtype.itemsize <= 4:
        return values.astype(np.float32)
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def as_wavelength(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(np.float64)


def as_mask(values: np.ndarray) -> np.ndarray:
    """A pixel mask as int32, bits kept. LAMOST stores masks as floats; a non-finite mask value means bad."""
    values = np.asarray(values)
    # min/max are NaN when any value is: one test catches NaN, inf and values no mask can hold.
    if values.dtype.kind == "f" and values.size and not (values.min() > -(2.0**31) and values.max() < 2.0**32):
        with np.errstate(invalid="ignore"):
            values = np.where(np.isfinite(values) & (np.abs(values) < 2.0**32), values, 1.0)
    # Through int64 and uint32 so that bit 31 survives as a negative int32 instead of overflowing.
    return values.astype(np.int64).astype(np.uint32).view(np.int32)


def log_linear_wavelength(coeff0: float, coeff1: float, n: int) -> np.ndarray:
    """Pixel centres of a log-linear grid: 10**(coeff0 + coeff1 * i), i = 0..n-1."""
    with np.errstate(over="ignore"):  # absurd coefficients give inf, which validate() then rejects
        return 10.0 ** (coeff0 + coeff1 * np.arange(n, dtype=np.float64))


def empty_spectrum(source: str, error: str) -> Spectrum:
    """The record of a spectrum that could not be read: no data, UNREADABLE, the reason in meta['error']."""
    return Spectrum(
        wavelength=np.empty(0, np.float64),
        flux=np.empty(0, np.float32),
        ivar=np.empty(0, np.float32),
        andmask=np.empty(0, np.int32),
        meta={"error": error},
        source=source,
        flags=int(Flag.UNREADABLE),
    )


# --- metadata values: header cards and table cells come as whatever the writer chose ---


def to_int(value: Any) -> int | None:
    """int from an int, an integral float or a numeric string (FIBERID is the string '8' in some DR2 files)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("ascii", "replace")
    try:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        as_float = float(value)
        return int(as_float) if as_float.is_integer() else None
    except (TypeError, ValueError, OverflowError):
        return None


def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("ascii", "replace")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    return text or None


# Which converter each META_KEYS entry goes through.
META_TYPES = {
    "obsid": to_int, "designation": to_str, "ra": to_float, "dec": to_float, "lmjd": to_int, "mjd": to_int,
    "planid": to_str, "spid": to_int, "fiberid": to_int, "obsdate": to_str,
    "snr_u": to_float, "snr_g": to_float, "snr_r": to_float, "snr_i": to_float, "snr_z": to_float,
    "lamost_class": to_str, "lamost_subclass": to_str, "lamost_z": to_float, "release": to_str,
}
assert set(META_TYPES) == set(META_KEYS), "every metadata key needs a converter"


def release_name(data_v: Any) -> str | None:
    """'LAMOST DR9' -> 'DR9', 'LAMOST DR13 Q1' -> 'DR13 Q1'; None when absent."""
    text = to_str(data_v)
    if text is None:
        return None
    return re.sub(r"^LAMOST\s*", "", text, flags=re.IGNORECASE) or None


def lamost_header_meta(header: Any) -> dict[str, Any]:
    """META_KEYS from a LAMOST primary header (DR1-DR2 spell the S/N keywords SN_G, later ones SNRG)."""
    get = header.get
    date = to_str(get("OBSDATE")) or to_str(get("DATE-OBS"))
    meta = {
        "obsid": to_int(get("OBSID")),
        "designation": to_str(get("DESIG")),
        "ra": to_float(get("RA")),
        "dec": to_float(get("DEC")),
        "lmjd": to_int(get("LMJD")),
        "mjd": to_int(get("MJD")),
        "planid": to_str(get("PLANID")),
        "spid": to_int(get("SPID")),
        "fiberid": to_int(get("FIBERID")),
        # The night's date: DATE-OBS is the median UTC, which in China falls on the local evening's date.
        "obsdate": date[:10] if date and _DATE.match(date) else date,
        "lamost_class": to_str(get("CLASS")),
        "lamost_subclass": to_str(get("SUBCLASS")),
        "lamost_z": to_float(get("Z")),
        "release": release_name(get("DATA_V")),
    }
    for band in "ugriz":
        value = get(f"SNR{band.upper()}")
        meta[f"snr_{band}"] = to_float(value if value is not None else get(f"SN_{band.upper()}"))
    return {key: meta[key] for key in META_KEYS}


def metadata_flags(meta: dict[str, Any]) -> int:
    """MISSING_METADATA when the file does not say which observation (OBSID) or where (RA/DEC) it is."""
    return int(Flag.MISSING_METADATA) if any(meta.get(key) is None for key in REQUIRED_META) else 0


def validate(spectrum: Spectrum) -> Spectrum:
    """Equal 1-D arrays of at least two pixels on a finite, strictly increasing wavelength grid
    (a decreasing one is reversed), plus MISSING_METADATA. SpectrumReadError otherwise."""
    wavelength, n = spectrum.wavelength, spectrum.flux.size
    if n < 2 or not wavelength.shape == spectrum.flux.shape == spectrum.ivar.shape == spectrum.andmask.shape == (n,):
        shapes = {name: getattr(spectrum, name).shape for name in ("wavelength", "flux", "ivar", "andmask")}
        raise SpectrumReadError(f"{spectrum.source}: arrays of unexpected shapes {shapes} (want equal 1-D, >= 2 pixels)")
    with np.errstate(invalid="ignore"):  # inf - inf; the checks below reject such grids
        step = np.diff(wavelength)
    # Increasing steps rule out NaN anywhere, so finiteness only needs checking at the ends.
    if not (step > 0).all():
        if (step < 0).all():
            for name in ("wavelength", "flux", "ivar", "andmask"):
                setattr(spectrum, name, getattr(spectrum, name)[::-1].copy())
            wavelength = spectrum.wavelength
        else:
            raise SpectrumReadError(
                f"{spectrum.source}: wavelength is not strictly increasing (pixels out of order, repeated or NaN)"
            )
    if not (wavelength[0] > 0 and np.isfinite(wavelength[-1])):
        raise SpectrumReadError(f"{spectrum.source}: wavelength has non-finite or non-positive values")
    spectrum.flags |= metadata_flags(spectrum.meta)
    return spectrum
