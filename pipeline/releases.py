"""Release profiles: where a LAMOST data release keeps its spectra and which layout to expect.

LAMOST lays a release out as ``<root>/<obsdate YYYYMMDD>/<planid>/spec-<lmjd>-<planid>_sp<NN>-<fff>.fits.gz``
with the LRS general catalog beside it. The layout named here is only what to expect (the summary
reports surprises); readers always pick the layout from the file's structure.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseProfile:
    name: str
    layout: str  # expected reader layout: 'lamost_dr1', 'lamost_image' or 'lamost_coadd'
    pattern: str = "*/*/spec-*.fits*"  # glob below the data root
    catalog: str | None = None  # general catalog file name below the root, if the release ships one


def _profile(n: int) -> ReleaseProfile:
    layout = "lamost_dr1" if n == 1 else "lamost_image" if n <= 8 else "lamost_coadd"
    return ReleaseProfile(name=f"DR{n}", layout=layout, catalog=f"dr{n}_lrs_catalogue.csv")


RELEASES: dict[str, ReleaseProfile] = {f"DR{n}": _profile(n) for n in range(1, 14)}
RELEASES["sample"] = ReleaseProfile(name="sample", layout="lamost_coadd", catalog="catalog.csv")


class UnknownRelease(ValueError):
    """A release name that is not in RELEASES; the message lists the valid ones."""


def get_release(name: str) -> ReleaseProfile:
    """The profile for ``name`` (case-insensitive: 'dr5', 'DR5', 'sample'); UnknownRelease for any other
    name, with the valid names and the nearest one."""
    by_key = {key.lower(): profile for key, profile in RELEASES.items()}
    profile = by_key.get(name.strip().lower())
    if profile is None:
        close = difflib.get_close_matches(name.strip().lower(), list(by_key), n=1)
        hint = f"did you mean {by_key[close[0]].name!r}? " if close else ""
        newer = ("; a release this table does not know can be read with --input DIRECTORY (each file's layout "
                 "is read from the file)") if re.fullmatch(r"dr\s*\d+", name.strip().lower()) else ""
        raise UnknownRelease(f"unknown release {name!r}: {hint}valid names are {', '.join(RELEASES)} (any case){newer}")
    return profile
