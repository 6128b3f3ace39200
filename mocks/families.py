"""Mock families: independently built mock generators behind one interface.

A model trained on one generator can score 0.99+ on that generator and still miss spectra that another
builds differently (docs/facts.md), so the yardstick is agreement across families
(training/leave_one_family_out.py). Each family is a module with

    simulate(n, seed, *, class_mix, snr_distribution, snr_range, start, chunk_size, templates_dir)
        -> Iterator[MockChunk]

``FAMILIES`` maps a family name to that function's import path; modules are imported only when a family
is used, so one family that fails to import (or lacks ../shared) leaves the others usable.
``generate`` calls a family and checks what it yields: the common truth columns, of the right kinds,
row for row with the spectra, plus ``family``. See docs/families.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lamost_classify.contract import CLASS_NAMES, N_NATIVE

from .simulate import BALANCED, MockChunk

#: family name -> "module:function" (relative to this package)
FAMILIES: dict[str, str] = {
    "survey": ".families:_survey_simulate",  # mocks/simulate.py, adapted below
    "eigen": ".family_eigen:simulate",
    "physical": ".family_physical:simulate",
}

#: Truth columns every family yields, with the numpy kind each must have ('i' int, 'f' float, 'U'/'O' str).
COMMON_TRUTH: dict[str, str] = {
    "id": "i", "class": "str", "subclass": "str", "template": "str", "z": "f", "snr_g": "f", "snr_r": "f",
    "resolution": "f", "family": "str",
}


class FamilyError(RuntimeError):
    """A family could not be loaded, or yielded mocks that break the interface."""


def family_simulate(family: str) -> Callable[..., Iterator[MockChunk]]:
    """The ``simulate`` function of ``family``, imported now."""
    if family not in FAMILIES:
        raise FamilyError(f"unknown mock family {family!r}: known families are {', '.join(FAMILIES)}")
    module, _, name = FAMILIES[family].partition(":")
    try:
        return getattr(importlib.import_module(module, __package__), name)
    except (ImportError, AttributeError) as exc:
        raise FamilyError(f"mock family {family!r} could not be loaded from {__package__}{module}: {exc}") from exc


def _survey_simulate(n: int, seed: int, *, class_mix: Sequence[float] = BALANCED, snr_distribution: str = "real",
                     snr_range: tuple[float, float] = (2.0, 100.0), start: int = 0, chunk_size: int = 1000,
                     templates_dir: str | Path | None = None) -> Iterator[MockChunk]:
    """mocks/simulate.py's ``simulate`` under the family interface (its extra truth columns kept)."""
    from .simulate import simulate

    for chunk in simulate(n, seed, class_mix=tuple(class_mix), templates_dir=templates_dir,
                          snr_distribution=snr_distribution, snr_range=tuple(snr_range), chunk_size=chunk_size,
                          start=start):
        chunk.truth["family"] = np.full(len(chunk), "survey")
        yield chunk


def check_chunk(family: str, chunk: MockChunk) -> None:
    """Raise FamilyError naming what in ``chunk`` breaks the family interface."""
    n = len(chunk.flux)
    for name, array, dtype in (("flux", chunk.flux, np.float32), ("ivar", chunk.ivar, np.float32),
                               ("andmask", chunk.andmask, np.int32)):
        if array.shape != (n, N_NATIVE) or array.dtype != dtype:
            raise FamilyError(f"family {family!r}: {name} is {array.dtype}{array.shape}, "
                              f"the interface asks for {np.dtype(dtype)}({n}, {N_NATIVE})")
    missing = [k for k in COMMON_TRUTH if k not in chunk.truth]
    if missing:
        raise FamilyError(f"family {family!r}: truth lacks the columns {missing}")
    for key, kind in COMMON_TRUTH.items():
        column = np.asarray(chunk.truth[key])
        ok = column.dtype.kind in ("U", "O") if kind == "str" else column.dtype.kind == kind
        if column.shape != (n,) or not ok:
            raise FamilyError(f"family {family!r}: truth column {key!r} is {column.dtype}{column.shape}, "
                              f"expected {n} values of kind {kind}")
    unknown = set(np.asarray(chunk.truth["class"]).tolist()) - set(CLASS_NAMES)
    if unknown:
        raise FamilyError(f"family {family!r}: classes {sorted(unknown)} are not STAR/GALAXY/QSO")
    if not (np.asarray(chunk.truth["family"]) == family).all():
        raise FamilyError(f"family {family!r}: its truth names another family "
                          f"({sorted(set(np.asarray(chunk.truth['family']).tolist()))})")


def generate(family: str, n: int, seed: int, **kwargs) -> Iterator[MockChunk]:
    """Mocks ``start`` .. ``start+n-1`` of ``family`` (keyword arguments as the interface's ``simulate``),
    each chunk checked against the interface (``check_chunk``)."""
    simulate = family_simulate(family)
    for chunk in simulate(n, seed, **kwargs):
        check_chunk(family, chunk)
        yield chunk
