"""What to select, as one DuckDB ``WHERE`` condition: class, probabilities, flag bits, a cone, obsids,
disagreement with LAMOST, and a free ``--where`` condition (checked by ``where_guard``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import CLASS_NAMES, UNUSABLE, Flag
from .errors import QueryError
from .where_guard import validate_where

PROB_COLUMN = {"STAR": "prob_star", "GALAXY": "prob_galaxy", "QSO": "prob_qso"}
# Every bit a flags value can hold (the column is a signed int64; bit 63 is never used).
ALL_BITS = (1 << 63) - 1


@dataclass(frozen=True)
class Cone:
    """A circle on the sky: centre (deg) and radius (arcsec)."""

    ra: float
    dec: float
    radius_arcsec: float

    def __post_init__(self) -> None:
        for name in ("ra", "dec", "radius_arcsec"):
            if not math.isfinite(getattr(self, name)):
                raise QueryError(f"cone {name} must be a finite number, got {getattr(self, name)}")
        if not -90.0 <= self.dec <= 90.0:
            raise QueryError(f"cone dec must lie in [-90, 90] deg, got {self.dec}")
        if not 0.0 < self.radius_arcsec <= 180.0 * 3600.0:
            raise QueryError(f"cone radius must be in (0, 648000] arcsec, got {self.radius_arcsec}")


@dataclass(frozen=True)
class Selection:
    """What to select. Every criterion given must hold (AND); an empty Selection selects everything.

    ``min_prob`` applies to the probability of the class asked for with ``classes`` (for several classes,
    to the row's own class); ``min_confidence`` to ``confidence``, the published class's probability.
    ``flags`` holds flag tests that must all hold, each a ``--flags`` text ('any', 'none',
    'LOW_SNR,MANY_MASKED', 'all:A,B', 'none:UNUSABLE', see ``parse_flag_test``) or a (mode, mask)
    pair with mode any/all/none: at least one / all / none of the mask's bits set. ``disagree``: our
    class and LAMOST's are both one of STAR/GALAXY/QSO and differ (LAMOST's 'Unknown' is no disagreement). ``where`` is an SQL condition on the catalog's
    columns, checked by ``validate_where``.
    """

    classes: tuple[str, ...] = ()
    min_prob: float | None = None
    min_confidence: float | None = None
    flags: tuple[tuple[str, int] | str, ...] = ()
    cone: Cone | None = None
    obsids: tuple[int, ...] | None = None
    disagree: bool = False
    where: str | None = None
    columns: tuple[str, ...] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        classes = tuple(c.strip().upper() for c in self.classes)
        for c in classes:
            if c not in CLASS_NAMES:
                raise QueryError(f"unknown class {c!r}: choose from {', '.join(CLASS_NAMES)}")
        object.__setattr__(self, "classes", classes)
        for name in ("min_prob", "min_confidence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise QueryError(f"{name} must lie in [0, 1], got {value}")
        if self.min_prob is not None and not classes:
            raise QueryError("min_prob needs a class (--class); use min_confidence for the top probability")
        if self.limit is not None and self.limit < 0:
            raise QueryError(f"limit must be >= 0, got {self.limit}")
        tests = []
        for test in self.flags:
            mode, mask = parse_flag_test(test) if isinstance(test, str) else test
            if mode not in ("any", "all", "none") or not 0 < int(mask) <= ALL_BITS:
                raise QueryError(f"bad flag test {test!r}: mode any/all/none and a positive 63-bit mask")
            tests.append((mode, int(mask)))
        object.__setattr__(self, "flags", tuple(tests))


def flag_mask(names: str | Iterable[str]) -> int:
    """The bit mask of comma-separated (or listed) flag names, case-insensitive. 'UNUSABLE' stands for
    the bits that leave a row without a class; 'ANY' for every bit."""
    if isinstance(names, str):
        names = names.split(",")
    mask = 0
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if name == "ANY":
            mask |= ALL_BITS
        elif name == "UNUSABLE":
            mask |= int(UNUSABLE)
        elif name in Flag.__members__:
            mask |= int(Flag[name])
        else:
            known = ", ".join(list(Flag.__members__) + ["UNUSABLE", "ANY"])
            raise QueryError(f"unknown flag {raw.strip()!r}: known flags are {known}")
    return mask


def parse_flag_test(spec: str) -> tuple[str, int]:
    """A ``--flags`` value as (mode, mask), mode one of any/all/none.

    'any' or 'none' alone: some bit / no bit set; 'LOW_SNR,MANY_MASKED': either bit set (same as
    'any:LOW_SNR,MANY_MASKED'); 'all:A,B': both set; 'none:A,B': neither set.
    """
    text = spec.strip()
    mode, _, names = text.partition(":")
    mode = mode.strip().lower()
    if not names:
        if mode in ("any", "none"):
            return mode, ALL_BITS
        return "any", flag_mask(text)
    if mode not in ("any", "all", "none"):
        raise QueryError(f"bad --flags {spec!r}: write NAMES, any:NAMES, all:NAMES or none:NAMES")
    mask = flag_mask(names)
    if not mask:
        raise QueryError(f"bad --flags {spec!r}: no flag names after {mode}:")
    return mode, mask


def sql_float(x: float) -> str:
    # repr of a float is an exact, SQL-parsable literal; the value was checked finite by the caller.
    return repr(float(x))


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cone_sql(cone: Cone) -> tuple[str, str]:
    """(WHERE condition, distance expression in arcsec) for a cone.

    A bounding box on dec (and on RA with wrap-around, unless the circle reaches a pole) lets the scan
    skip rows cheaply; the exact test is the haversine distance, stable at small radii.
    """
    r = cone.radius_arcsec / 3600.0
    ra0 = cone.ra % 360.0
    dec0 = cone.dec
    box = [f"dec BETWEEN {sql_float(max(dec0 - r, -90.0))} AND {sql_float(min(dec0 + r, 90.0))}"]
    if abs(dec0) + r < 89.999 and r < 90.0:
        # Half-width in RA of the circle's tangent points: asin(sin r / cos dec0), padded for rounding.
        half = math.degrees(math.asin(min(1.0, math.sin(math.radians(r)) / math.cos(math.radians(dec0)))))
        half = half * (1 + 1e-9) + 1e-9
        lo, hi = ra0 - half, ra0 + half
        if lo < 0.0:
            box.append(f"(ra >= {sql_float(lo + 360.0)} OR ra <= {sql_float(hi)})")
        elif hi > 360.0:
            box.append(f"(ra >= {sql_float(lo)} OR ra <= {sql_float(hi - 360.0)})")
        else:
            box.append(f"ra BETWEEN {sql_float(lo)} AND {sql_float(hi)}")
    hav = (
        f"(pow(sin(radians(dec - {sql_float(dec0)}) / 2), 2) + cos(radians(dec)) * "
        f"{sql_float(math.cos(math.radians(dec0)))} * pow(sin(radians(ra - {sql_float(ra0)}) / 2), 2))"
    )
    # least(1, .) guards asin against rounding just above 1 for antipodal points.
    dist = f"(degrees(2 * asin(sqrt(least(1.0, {hav})))) * 3600.0)"
    limit = sql_float(math.sin(math.radians(r) / 2) ** 2)
    condition = " AND ".join(box + [f"{hav} <= {limit}"])
    return condition, dist


def angular_distance_arcsec(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in arcsec between points in deg (numpy, haversine): the cone test's twin."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    hav = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.minimum(1.0, hav)))) * 3600.0


def selection_sql(selection: Selection, columns: Sequence[str]) -> str:
    """The WHERE condition for a selection ('TRUE' for none). ``columns``: the catalog's column names,
    to check the ``where`` text against."""
    parts: list[str] = []
    if selection.classes:
        names = ", ".join(f"'{c}'" for c in selection.classes)
        parts.append(f'"class" IN ({names})')
    # Probabilities are float32: compare in float32 so that '>= 0.9' keeps a stored 0.9 (0.89999998).
    if selection.min_prob is not None:
        p = f"CAST({sql_float(selection.min_prob)} AS FLOAT)"
        tests = [f"(\"class\" = '{c}' AND {PROB_COLUMN[c]} >= {p})" for c in selection.classes]
        parts.append(" OR ".join(tests))
    if selection.min_confidence is not None:
        parts.append(f"confidence >= CAST({sql_float(selection.min_confidence)} AS FLOAT)")
    for mode, mask in selection.flags:
        test = {"any": "<> 0", "all": f"= {mask}", "none": "= 0"}[mode]
        parts.append(f"(coalesce(flags, 0) & {mask}) {test}")
    if selection.cone is not None:
        parts.append(cone_sql(selection.cone)[0])
    if selection.obsids is not None:
        # A registered Arrow table, not a literal list: a file of 100 000 obsids stays cheap to plan.
        parts.append("obsid IN (SELECT obsid FROM _obsids)")
    if selection.disagree:
        parts.append(
            "\"class\" IS NOT NULL AND upper(trim(lamost_class)) IN ('STAR', 'GALAXY', 'QSO') "
            'AND upper(trim(lamost_class)) <> "class"'
        )
    if selection.where is not None:
        validate_where(selection.where, columns)
        # The newline ends the condition's text even if the tokenizer and parser ever disagreed on a comment.
        parts.append(f"({selection.where}\n)")
    return " AND ".join(f"({p})" for p in parts) if parts else "TRUE"




def read_obsids(values: Iterable[str]) -> tuple[int, ...]:
    """Obsids from ``--obsid`` values: each an integer, or the path of a text file with one per line
    (blank lines and '#' comments skipped, commas or spaces also separate)."""
    out: list[int] = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        if value.lstrip("+-").isdigit():
            out.append(int(value))
            continue
        path = Path(value)
        if not path.is_file():
            raise QueryError(f"--obsid {value!r} is neither an integer nor a readable file")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for token in line.split("#", 1)[0].replace(",", " ").split():
                try:
                    out.append(int(token))
                except ValueError:
                    raise QueryError(f"{path}:{lineno}: {token!r} is not an integer obsid") from None
    return tuple(out)
