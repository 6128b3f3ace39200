"""A small, fast reader for the FITS structures spectra use: primary/extension images and binary tables.

Why not astropy.io.fits: on a spectrum-sized file astropy spends many times longer building Header and
ColDefs objects than the gunzip itself takes (``bench/read.py`` measures both). A survey-scale reader only
needs the cards' raw text, the data offsets and ``np.frombuffer``. Anything this module does not understand (variable-length
columns, random groups) raises :class:`SpectrumReadError` when it is actually used, never silently.
Checked against astropy on every real file in the tests.
"""

from __future__ import annotations

import math
import re
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from ..spectrum import SpectrumReadError

BLOCK = 2880
CARD = 80

_INT = re.compile(r"^[+-]?\d+$")
# FITS writes exponents with E or D (double precision).
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([ED][+-]?\d+)?$")

# TFORM letter -> numpy dtype of one element (big-endian, as stored).
_TFORM_DTYPES = {
    "L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8",
    "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16",
}
_STRING = re.compile(r"'((?:[^']|'')*)'")
_CARD_FIELDS = re.compile(r"(.{8})(.{72})", re.DOTALL)
_TFORM = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])(.*)$")
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def parse_value(field: str) -> Any:
    """The value of one card's value field (columns 11-80): str, bool, int, float, or None if undefined."""
    text = field.lstrip()
    if text[:1] == "'":
        end = text.find("'", 1)
        if end > 0 and text[end + 1 : end + 2] != "'":  # the common case: no doubled quote inside
            return text[1:end].rstrip()
        match = _STRING.match(text)  # ends at the first single quote that is not doubled
        body = match.group(1) if match else text[1:]
        return body.replace("''", "'").rstrip()
    text = text.split("/", 1)[0].rstrip()
    if not text:
        return None
    if text == "T":
        return True
    if text == "F":
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text.replace("D", "E"))
    return text  # complex numbers and oddities: keep the text


class Header:
    """The cards of one HDU, parsed lazily: ``get`` decodes a value the first time it is asked for.

    ``cards`` maps the 8-character keyword field (blank-padded) to the other 72 characters of its card.
    """

    def __init__(self, cards: dict[str, str]) -> None:
        self._cards = cards
        self._parsed: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._parsed:
            value = self._parsed[key]
        else:
            rest = self._cards.get(key.upper().ljust(8))
            # A value follows "= " in columns 9-10; COMMENT, HISTORY and blank cards have none.
            value = self._parsed[key] = parse_value(rest[2:]) if rest and rest[:2] == "= " else None
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return self.get(key)

    def __contains__(self, key: str) -> bool:
        rest = self._cards.get(key.upper().ljust(8))
        return rest is not None and rest[:2] == "= "

    def keys(self) -> list[str]:
        return [key.rstrip() for key, rest in self._cards.items() if rest[:2] == "= "]


def _find_end(buf: bytes, start: int) -> int:
    """Offset of the END card of the header starting at ``start`` (cards are 80-byte aligned), -1 if none."""
    pos = buf.find(b"END     ", start)
    while pos >= 0 and (pos - start) % CARD:
        pos = buf.find(b"END     ", pos + 1)
    return pos


def _read_header(buf: bytes, start: int) -> tuple[Header, int] | None:
    """Parse the header starting at ``start``; returns (header, offset of its data), None if no END card."""
    end = _find_end(buf, start)
    if end < 0:
        return None
    text = buf[start:end].decode("latin-1")  # FITS headers are ASCII; latin-1 never fails
    pairs = _CARD_FIELDS.findall(text)  # [(keyword field, rest of card)], split in C
    cards = dict(reversed(pairs))  # reversed: the first occurrence of a keyword wins, as in astropy
    if "CONTINUE" in text:
        _join_long_strings(pairs, cards)
    data_start = start + -(-(end + CARD - start) // BLOCK) * BLOCK
    return Header(cards), data_start


def _join_long_strings(pairs: list[tuple[str, str]], cards: dict[str, str]) -> None:
    """Long strings (the OGIP convention): KEY = 'abc&' followed by CONTINUE  'def' cards."""
    key = None
    for keyword, rest in pairs:
        if rest[:2] == "= ":
            key = keyword
        elif keyword == "CONTINUE" and key is not None:
            prev, more = parse_value(cards[key][2:]), parse_value(rest)
            if isinstance(prev, str) and prev.endswith("&") and isinstance(more, str):
                joined = (prev[:-1] + more).replace("'", "''")
                cards[key] = f"= '{joined}'"
        else:
            key = None


class HDU:
    """One header-data unit: ``header``, ``name`` (EXTNAME upper-cased, 'PRIMARY' for the first), ``kind``
    ('image', 'bintable' or the XTENSION value) and ``data`` (an image array or a table's records)."""

    def __init__(self, buf: bytes, index: int, header: Header, data_start: int, data_size: int, source: str) -> None:
        self.buf = buf
        self.index = index
        self.header = header
        self.data_start = data_start
        self.data_size = data_size
        self.source = source
        xtension = header.get("XTENSION")
        self.kind = "image" if index == 0 or xtension == "IMAGE" else str(xtension).strip().lower()
        extname = header.get("EXTNAME")
        self.name = (str(extname).strip().upper() if extname else "") or ("PRIMARY" if index == 0 else "")

    def int_keyword(self, key: str, default: int = 0) -> int:
        return int_keyword(self.header, key, default, f"{self.source}: HDU {self.index}")

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """Data shape in numpy (C) order, e.g. (5, 3909) for NAXIS1 = 3909, NAXIS2 = 5; () without data."""
        return tuple(reversed(axes(self.header, f"{self.source}: HDU {self.index}")))

    @property
    def has_data(self) -> bool:
        return self.data_size > 0

    def _bytes_available(self) -> None:
        if self.data_start + self.data_size > len(self.buf):
            raise SpectrumReadError(
                f"{self.source}: file is truncated: HDU {self.index} ({self.name or self.kind}) needs "
                f"{self.data_size} bytes of data from byte {self.data_start}, the file has {len(self.buf)} bytes"
            )

    @cached_property
    def data(self) -> np.ndarray:
        """Image HDUs: the array as stored (big-endian, BSCALE/BZERO applied). Binary tables: the records."""
        self._bytes_available()
        if self.kind == "image":
            return self._image()
        if self.kind == "bintable":
            return self._records()
        raise SpectrumReadError(f"{self.source}: HDU {self.index} is a {self.kind!r} extension, not supported")

    def _image(self) -> np.ndarray:
        bitpix = self.int_keyword("BITPIX")
        if bitpix not in _BITPIX:
            raise SpectrumReadError(f"{self.source}: HDU {self.index} has invalid BITPIX = {bitpix}")
        count = math.prod(self.shape) if self.shape else 0
        array = np.frombuffer(self.buf, dtype=_BITPIX[bitpix], count=count, offset=self.data_start).reshape(self.shape)
        scale, zero = self.header.get("BSCALE", 1), self.header.get("BZERO", 0)
        if scale != 1 or zero != 0:
            array = array * np.float64(scale) + np.float64(zero)
        return array

    @cached_property
    def columns(self) -> dict[str, int]:
        """Binary-table column names (upper-cased, as FITS names are case-insensitive) -> column number."""
        if self.kind != "bintable":
            return {}
        n = self.tfields
        names = {}
        for i in range(1, n + 1):
            name = str(self.header.get(f"TTYPE{i}", f"COL{i}")).strip().upper()
            names.setdefault(name, i)
        return names

    @cached_property
    def tforms(self) -> tuple[str, ...]:
        return tuple(str(self.header.get(f"TFORM{i}", "")) for i in range(1, self.tfields + 1))

    @cached_property
    def tfields(self) -> int:
        n = self.int_keyword("TFIELDS")
        if not 0 <= n <= 999:  # the FITS standard's limit
            raise SpectrumReadError(f"{self.source}: HDU {self.index}: damaged header: TFIELDS = {n}")
        return n

    @cached_property
    def record_dtype(self) -> np.dtype:
        try:
            dtype = record_dtype(self.tforms)
        except ValueError as exc:
            raise SpectrumReadError(f"{self.source}: HDU {self.index}: {exc}") from exc
        row_bytes = self.int_keyword("NAXIS1")
        if dtype.itemsize != row_bytes:
            raise SpectrumReadError(
                f"{self.source}: HDU {self.index}: columns add up to {dtype.itemsize} bytes per row, NAXIS1 says "
                f"{row_bytes}; the table header is inconsistent"
            )
        return dtype

    def _records(self) -> np.ndarray:
        nrows = self.int_keyword("NAXIS2")
        return np.frombuffer(self.buf, dtype=self.record_dtype, count=nrows, offset=self.data_start)

    def column(self, name: str) -> np.ndarray:
        """One binary-table column by (case-insensitive) name, TSCAL/TZERO applied, still big-endian."""
        number = self.columns.get(name.upper())
        if number is None:
            raise SpectrumReadError(
                f"{self.source}: HDU {self.index} ({self.name}) has no column {name!r}; it has {list(self.columns)}"
            )
        records = self.data  # raises on invalid TFORMs
        tform = self.tforms[number - 1]
        if _TFORM.match(tform).group(2) in "PQ":
            raise SpectrumReadError(f"{self.source}: column {name!r} is variable-length ({tform}), not supported")
        values = records[f"c{number}"]
        if number in self.scaled_columns:
            scale, zero = self.scaled_columns[number]
            values = values * np.float64(scale) + np.float64(zero)
        return values

    @cached_property
    def scaled_columns(self) -> dict[int, tuple[float, float]]:
        """Column number -> (TSCAL, TZERO) for the columns stored scaled (e.g. unsigned ints as TZERO = 2**31)."""
        scaled = {}
        for key in self.header.keys():
            if key.startswith(("TSCAL", "TZERO")) and key[5:].isdigit():
                number = int(key[5:])
                scaled[number] = (self.header.get(f"TSCAL{number}", 1), self.header.get(f"TZERO{number}", 0))
        return scaled


class FitsFile:
    """The HDUs of one FITS file held in memory. ``truncated`` says why the HDU list stopped early, if it did."""

    def __init__(self, buf: bytes, source: str = "<bytes>") -> None:
        if not buf:
            raise SpectrumReadError(f"{source}: file is empty (0 bytes)")
        if not buf.startswith(b"SIMPLE  ="):
            head = buf[:16]
            raise SpectrumReadError(
                f"{source}: not a FITS file (a FITS file starts with 'SIMPLE  =', this one with {head!r})"
            )
        self.buf = buf
        self.source = source
        self.hdus: list[HDU] = []
        self.truncated: str | None = None
        pos = 0
        while pos < len(buf):
            if self.hdus and not buf.startswith(b"XTENSION=", pos):
                break  # trailing bytes after the last HDU: ignored, as astropy does
            parsed = _read_header(buf, pos)
            if parsed is None:
                self.truncated = f"the header of HDU {len(self.hdus)} has no END card (file truncated?)"
                if not self.hdus:
                    raise SpectrumReadError(f"{source}: not a readable FITS file: {self.truncated}")
                break
            header, data_start = parsed
            size = _data_size(header, f"{source}: HDU {len(self.hdus)}")
            self.hdus.append(HDU(buf, len(self.hdus), header, data_start, size, source))
            pos = data_start + -(-size // BLOCK) * BLOCK
            if data_start + size > len(buf):
                self.truncated = f"the data of HDU {len(self.hdus) - 1} end past the end of the file"
                break

    def __len__(self) -> int:
        return len(self.hdus)

    def __iter__(self):
        return iter(self.hdus)

    def __getitem__(self, key: int | str) -> HDU:
        if isinstance(key, int):
            return self.hdus[key]
        for hdu in self.hdus:
            if hdu.name == key.upper():
                return hdu
        raise KeyError(key)

    def get(self, name: str) -> HDU | None:
        try:
            return self[name]
        except KeyError:
            return None

    @property
    def primary(self) -> HDU:
        return self.hdus[0]

    def describe(self) -> str:
        """A one-line summary of the HDUs, for error messages."""
        parts = []
        for hdu in self.hdus:
            if hdu.kind == "bintable":
                parts.append(f"{hdu.name or hdu.index}: table {sorted(hdu.columns)}")
            else:
                dims = "x".join(str(n) for n in hdu.shape) or "no data"
                parts.append(f"{hdu.name or hdu.index}: image {dims}")
        return "; ".join(parts)


@lru_cache(maxsize=64)  # a survey's files share a handful of table layouts
def record_dtype(tforms: tuple[str, ...]) -> np.dtype:
    """The numpy record dtype of a binary table row from its TFORMn values (ValueError if one is invalid)."""
    fields = []
    for i, tform in enumerate(tforms, start=1):
        match = _TFORM.match(tform)
        if not match:
            raise ValueError(f"column {i} has invalid TFORM {tform!r}")
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        if code == "A":
            dtype: Any = f"S{repeat}"
        elif code == "X":
            dtype = ("u1", (repeat + 7) // 8)
        elif code in "PQ":  # variable-length descriptor: kept as raw (count, offset) pairs
            dtype = (">i4" if code == "P" else ">i8", 2)
        elif repeat == 1:
            dtype = _TFORM_DTYPES[code]
        else:
            dtype = (_TFORM_DTYPES[code], repeat)
        fields.append((f"c{i}", dtype))
    return np.dtype(fields)


def int_keyword(header: Header, key: str, default: int, where: str) -> int:
    """A structural keyword (BITPIX, NAXISn, ...) that must be an integer; SpectrumReadError if it is not."""
    value = header.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpectrumReadError(f"{where}: damaged header: {key} should be an integer, it is {value!r}")
    return value


def axes(header: Header, where: str) -> list[int]:
    """NAXIS1..NAXISn (FITS order), each checked to be a non-negative integer."""
    naxis = int_keyword(header, "NAXIS", 0, where)
    if not 0 <= naxis <= 999:  # the FITS standard's limit
        raise SpectrumReadError(f"{where}: damaged header: NAXIS = {naxis}")
    lengths = [int_keyword(header, f"NAXIS{i}", 0, where) for i in range(1, naxis + 1)]
    if any(n < 0 for n in lengths):
        raise SpectrumReadError(f"{where}: damaged header: negative axis length in {lengths}")
    return lengths


def _data_size(header: Header, where: str) -> int:
    lengths = axes(header, where)
    if not lengths:
        return 0
    bitpix = int_keyword(header, "BITPIX", 8, where)
    if bitpix not in _BITPIX:
        raise SpectrumReadError(f"{where}: damaged header: BITPIX = {bitpix}")
    gcount = int_keyword(header, "GCOUNT", 1, where)
    pcount = int_keyword(header, "PCOUNT", 0, where)
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(lengths))
