"""Release profiles: where a LAMOST data release keeps its spectra and which layout to expect.

LAMOST lays a release out as ``<root>/<obsdate YYYYMMDD>/<planid>/spec-<lmjd>-<planid>_sp<NN>-<fff>.fits.gz``
with the LRS general catalog beside it. The layout named here is only what to expect (the summary
reports surprises); readers always pick the layout from the file's structure.
"""

from __future__ import annotations

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


def get_release(name: str) -> ReleaseProfile:
    """The profile for ``name`` (case-insensitive: 'dr5', 'DR5', 'sample'); unknown names list the known ones."""
    key = name.upper() if name.lower() != "sample" else "sample"
    if key not in RELEASES:
        if key.startswith("DR") and key[2:].isdigit():  # a release newer than this table: v2.0 layout
            return ReleaseProfile(name=key, layout="lamost_coadd", catalog=f"{key.lower()}_lrs_catalogue.csv")
        raise KeyError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    return RELEASES[key]
