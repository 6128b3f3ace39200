"""Write spectra as LAMOST (DR1, DR2-DR8, DR9+ v2.0) and SDSS files, byte for byte like the real layouts.

The FITS bytes are assembled here (80-character cards, 2880-byte blocks, big-endian data) rather than
with astropy: astropy's HDU objects and verify cost more than writing the file, which adds up over
millions of mock spectra (bench/RESULTS.md). The tests read every layout back with astropy to prove the
files are valid FITS.
"""

from __future__ import annotations

import gzip as gzip_module
import os
from pathlib import Path
from typing import Any

import numpy as np

from lamost_classify.contract import NATIVE_COEFF0, NATIVE_COEFF1

BLOCK = 2880
CARD = 80
# gzip level 1: much faster to write than the default 6 (bench/RESULTS.md), the files stay small, and
# readers do not care.
GZIP_LEVEL = 1
LAYOUTS = ("dr1", "dr2-8", "v2")
# Keywords every LAMOST file carries (the data release default depends on the layout).
LAMOST_DEFAULTS: dict[str, Any] = {"TELESCOP": "LAMOST", "ORIGIN": "NAOC-LAMOST", "COEFF0": NATIVE_COEFF0,
                                   "COEFF1": NATIVE_COEFF1, "VACUUM": True}
DEFAULT_DATA_V = {"dr1": "LAMOST DR1", "dr2-8": "LAMOST DR5", "v2": "LAMOST DR10"}


# --- FITS bytes ---


def format_value(value: Any) -> str:
    """A header value in FITS fixed format: logicals and numbers right-aligned to column 30, strings quoted."""
    if isinstance(value, (bool, np.bool_)):
        return ("T" if value else "F").rjust(20)
    if isinstance(value, (int, np.integer)):
        return str(int(value)).rjust(20)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"FITS headers cannot hold {value!r}")
        text = repr(float(value)).upper()
        mantissa, _, exponent = text.partition("E")
        if "." not in mantissa:
            mantissa += ".0"
        return (mantissa + ("E" + exponent if exponent else "")).rjust(20)
    if isinstance(value, str):
        text = value.replace("'", "''")
        if len(text) > 68:
            raise ValueError(f"header string longer than 68 characters: {value!r}")
        return f"'{text:<8}'"
    raise TypeError(f"cannot write a {type(value).__name__} into a FITS header")


def header_block(cards: dict[str, Any]) -> bytes:
    """Header bytes: one card per (keyword, value), None values skipped, END, padded to 2880 bytes."""
    lines = []
    for key, value in cards.items():
        if value is None:
            continue
        key = key.upper()
        if len(key) > 8:
            raise ValueError(f"FITS keyword longer than 8 characters: {key!r}")
        line = f"{key:<8}= {format_value(value)}"
        if len(line) > CARD:
            raise ValueError(f"header card too long: {line!r}")
        lines.append(line.ljust(CARD))
    lines.append("END".ljust(CARD))
    text = "".join(lines)
    return (text + " " * (-len(text) % BLOCK)).encode("ascii")


def data_block(array: np.ndarray) -> bytes:
    raw = array.tobytes()
    return raw + b"\0" * (-len(raw) % BLOCK)


def bintable_hdu(name: str, columns: list[tuple[str, np.ndarray, str]], header: dict[str, Any] | None = None) -> bytes:
    """A BINTABLE extension. ``columns``: (name, values with one row per table row, TFORM letter-code)."""
    nrows = len(columns[0][1])
    fields, tforms, prepared = [], [], []
    for col_name, values, code in columns:
        values = np.asarray(values)
        if code == "A":
            values = values if values.dtype.kind == "S" else np.char.encode(values.astype(str), "ascii")
            width = max(1, values.dtype.itemsize)
            fields.append((col_name, f"S{width}"))
            tforms.append(f"{width}A")
        else:
            repeat = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
            dtype = {"E": ">f4", "D": ">f8", "J": ">i4", "K": ">i8", "I": ">i2", "B": "u1"}[code]
            fields.append((col_name, dtype, (repeat,)) if repeat > 1 else (col_name, dtype))
            tforms.append(f"{repeat}{code}" if repeat > 1 else code)
        prepared.append(values)
    records = np.zeros(nrows, dtype=fields)
    for (col_name, _, _), values in zip(columns, prepared):
        records[col_name] = values.reshape(records[col_name].shape)
    cards: dict[str, Any] = {
        "XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "NAXIS1": records.dtype.itemsize, "NAXIS2": nrows,
        "PCOUNT": 0, "GCOUNT": 1, "TFIELDS": len(columns),
    }
    for i, ((col_name, _, _), tform) in enumerate(zip(columns, tforms), start=1):
        cards[f"TTYPE{i}"] = col_name
        cards[f"TFORM{i}"] = tform
    cards["EXTNAME"] = name
    cards.update(header or {})
    return header_block(cards) + data_block(records)


def finish(path: str | os.PathLike | None, data: bytes, gzip: bool | None) -> bytes | None:
    """gzip when asked, or when the path ends in .gz; write to ``path``, or return the bytes when it is None."""
    if gzip is None:
        gzip = path is not None and str(path).endswith(".gz")
    if gzip:
        data = gzip_module.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if path is None:
        return data
    Path(path).write_bytes(data)
    return None


# --- LAMOST ---


def log_linear_solution(wavelength: np.ndarray) -> tuple[float, float]:
    """(COEFF0, COEFF1) of a log-linear wavelength array; ValueError if it is not log-linear."""
    logw = np.log10(np.asarray(wavelength, dtype=np.float64))
    coeff0 = float(logw[0])
    coeff1 = float((logw[-1] - logw[0]) / (logw.size - 1))
    if not coeff1 > 0 or np.max(np.abs(logw - (coeff0 + coeff1 * np.arange(logw.size)))) > 0.01 * coeff1:
        raise ValueError("wavelength is not increasing log-linear: the DR1 layout can only store a COEFF0/COEFF1 grid")
    return round(coeff0, 10), round(coeff1, 12)


def write_lamost_fits(
    path_or_none: str | os.PathLike | None,
    layout: str,
    wavelength: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    andmask: np.ndarray,
    ormask: np.ndarray | None = None,
    header: dict[str, Any] | None = None,
    gzip: bool | None = None,
) -> bytes | None:
    """Write one spectrum as a LAMOST file in ``layout`` 'dr1', 'dr2-8' or 'v2'.

    ``header`` adds or overrides primary keywords (OBSID, DESIG, RA, DEC, LMJD, MJD, PLANID, SPID, FIBERID,
    OBSDATE, CLASS, SUBCLASS, Z, SNRU..SNRZ, DATA_V ...); a None value leaves the keyword out, which is
    how a test writes a file without OBSID. Returns the bytes when ``path_or_none`` is None.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    wavelength = np.asarray(wavelength, dtype=np.float64)
    n = wavelength.size
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (flux, ivar, andmask)]
    ormask = np.zeros(n) if ormask is None else np.asarray(ormask, dtype=np.float64).reshape(-1)
    if any(a.size != n for a in (*arrays, ormask)):
        raise ValueError(f"wavelength has {n} pixels but flux/ivar/andmask/ormask have {[a.size for a in (*arrays, ormask)]}")
    flux, ivar, andmask = arrays

    keywords = dict(LAMOST_DEFAULTS, DATA_V=DEFAULT_DATA_V[layout])
    try:
        keywords["COEFF0"], keywords["COEFF1"] = log_linear_solution(wavelength)
    except ValueError:
        if layout == "dr1":
            raise
        keywords["COEFF0"] = keywords["COEFF1"] = None  # no log-linear solution to state
    keywords.update({k.upper(): v for k, v in (header or {}).items()})

    if layout == "v2":
        primary = {"SIMPLE": True, "BITPIX": 8, "NAXIS": 0,
                   # Stale image keywords stay in the real v2.0 primaries; readers must ignore them.
                   "NAXIS1": n, "NAXIS2": 5, "EXTEND": True, **keywords}
        columns = [(name, values[None, :], "E") for name, values in (
            ("FLUX", flux), ("IVAR", ivar), ("WAVELENGTH", wavelength), ("ANDMASK", andmask),
            ("ORMASK", ormask), ("NORMALIZATION", np.ones(n)))]
        data = header_block(primary) + bintable_hdu("COADD", columns)
    else:
        row2 = np.ones(n) if layout == "dr1" else wavelength  # DR1: a sub-continuum, not wavelength
        image = np.stack([flux, ivar, row2, andmask, ormask]).astype(">f4")
        primary = {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": n, "NAXIS2": 5, "EXTEND": True,
                   "EXTNAME": None if layout == "dr1" else "Flux", **keywords}
        data = header_block(primary) + data_block(image)
    return finish(path_or_none, data, gzip)


# --- SDSS ---


def write_sdss_spec(
    path_or_none: str | os.PathLike | None,
    wavelength: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray,
    or_mask: np.ndarray | None = None,
    header: dict[str, Any] | None = None,
    specobj: dict[str, Any] | None = None,
    specobj_extname: str = "SPECOBJ",
    gzip: bool | None = None,
) -> bytes | None:
    """Write one spectrum as an SDSS/BOSS spec file: COADD (loglam, flux, ivar, and_mask, or_mask per row)
    and a one-row SPECOBJ (or SPALL) table from ``specobj`` (e.g. CLASS, SUBCLASS, Z, PLUG_RA, PLUG_DEC)."""
    n = np.asarray(wavelength).size
    or_mask = np.zeros(n, np.int32) if or_mask is None else or_mask
    primary = {"SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "EXTEND": True, "TELESCOP": "SDSS 2.5-M",
               **{k.upper(): v for k, v in (header or {}).items()}}
    coadd = [
        ("flux", np.asarray(flux, np.float32), "E"),
        ("loglam", np.log10(np.asarray(wavelength, np.float64)).astype(np.float32), "E"),
        ("ivar", np.asarray(ivar, np.float32), "E"),
        ("and_mask", np.asarray(and_mask, np.int32), "J"),
        ("or_mask", np.asarray(or_mask, np.int32), "J"),
    ]
    rows = []
    for key, value in (specobj or {"CLASS": "STAR", "SUBCLASS": "", "Z": 0.0}).items():
        code = "A" if isinstance(value, str) else "K" if isinstance(value, (int, np.integer)) else "D"
        rows.append((key.upper(), np.array([value]), code))
    data = header_block(primary) + bintable_hdu("COADD", coadd) + bintable_hdu(specobj_extname, rows)
    return finish(path_or_none, data, gzip)
