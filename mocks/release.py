"""Mock spectra written out: a LAMOST data-release tree of FITS files with its general catalog and truth
table, or one Parquet table of spectra.

Each mock gets a fixed place in a mock survey (plan, spectrograph, fibre, night, sky position) from its id
and the master seed alone, so a release written in chunks, or by several workers, is the same release.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lamost_classify.contract import N_NATIVE, NATIVE_COEFF0, NATIVE_COEFF1

from .instrument import WAVELENGTH
from .simulate import MockChunk
from .writers import write_lamost_fits

FIBRES_PER_SPECTROGRAPH = 250
SPECTROGRAPHS = 16
PER_PLAN = FIBRES_PER_SPECTROGRAPH * SPECTROGRAPHS
FIRST_NIGHT = dt.date(2011, 10, 24)  # the first LAMOST survey night; mock plans follow night by night
OBSID_OFFSET = 3_000_000_000  # above every real LAMOST obsid (DR13: < 2e9), so mocks never collide


@dataclass
class Placement:
    """Where mock ``id`` sits in the mock survey: plan, spectrograph, fibre, date, sky position."""

    obsid: np.ndarray
    planid: np.ndarray
    spid: np.ndarray
    fiberid: np.ndarray
    obsdate: np.ndarray
    lmjd: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    designation: np.ndarray


def place(ids: np.ndarray, seed: int) -> Placement:
    """Plan/spectrograph/fibre from the id (4000 per plan); sky positions within 2.5 deg of a plan centre."""
    ids = np.asarray(ids, dtype=np.int64)
    plan = ids // PER_PLAN
    within = ids % PER_PLAN
    centre_rng = [np.random.default_rng(np.random.SeedSequence([int(seed), 7_000_000, int(p)])) for p in np.unique(plan)]
    centres = {int(p): (r.uniform(0, 360), np.degrees(np.arcsin(r.uniform(np.sin(np.radians(-10)), np.sin(np.radians(70))))))
               for p, r in zip(np.unique(plan), centre_rng)}
    pos_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8_000_000, int(ids[0]) if len(ids) else 0]))
    r = 2.5 * np.sqrt(pos_rng.random(len(ids)))
    phi = pos_rng.uniform(0, 2 * np.pi, len(ids))
    dec0 = np.array([centres[int(p)][1] for p in plan])
    ra0 = np.array([centres[int(p)][0] for p in plan])
    dec = np.clip(dec0 + r * np.sin(phi), -89.9, 89.9)
    ra = (ra0 + r * np.cos(phi) / np.cos(np.radians(dec))) % 360.0
    dates = [FIRST_NIGHT + dt.timedelta(days=int(p)) for p in plan]
    mjd0 = (FIRST_NIGHT - dt.date(1858, 11, 17)).days
    return Placement(
        obsid=OBSID_OFFSET + ids, planid=np.array([f"MOCK{p + 1:04d}" for p in plan]),
        spid=(within // FIBRES_PER_SPECTROGRAPH + 1).astype(np.int32), fiberid=(within % FIBRES_PER_SPECTROGRAPH + 1).astype(np.int32),
        obsdate=np.array([d.strftime("%Y-%m-%d") for d in dates]), lmjd=(mjd0 + plan).astype(np.int32), ra=ra, dec=dec,
        designation=np.array([designation(a, d) for a, d in zip(ra, dec)]),
    )


def designation(ra: float, dec: float) -> str:
    """'LAMOST Jhhmmss.ss+ddmmss.s' like the survey's."""
    h = ra / 15.0
    hh, mm = int(h), int((h * 60) % 60)
    ss = (h * 3600) % 60
    sign = "+" if dec >= 0 else "-"
    d = abs(dec)
    dd, dm = int(d), int((d * 60) % 60)
    ds = (d * 3600) % 60
    return f"LAMOST J{hh:02d}{mm:02d}{math.floor(ss * 100) / 100:05.2f}{sign}{dd:02d}{dm:02d}{math.floor(ds * 10) / 10:04.1f}"


def release_path(p: Placement, i: int) -> str:
    """<obsdate YYYYMMDD>/<planid>/spec-<lmjd>-<planid>_sp<NN>-<fff>.fits.gz"""
    return (f"{p.obsdate[i].replace('-', '')}/{p.planid[i]}/"
            f"spec-{p.lmjd[i]}-{p.planid[i]}_sp{p.spid[i]:02d}-{p.fiberid[i]:03d}.fits.gz")


CATALOG_COLUMNS = ["obsid", "designation", "obsdate", "lmjd", "planid", "spid", "fiberid", "ra", "dec",
                   "snru", "snrg", "snrr", "snri", "snrz", "class", "subclass", "z"]


def write_release(chunks: Iterator[MockChunk], root: str | Path, seed: int, layout: str = "v2",
                  progress: Callable[[int], None] | None = None, data_v: str = "MOCK") -> dict[str, Path]:
    """Write FITS files in the release tree, the general catalog (CSV) and the truth table (Parquet).
    ``data_v``: the release the files claim (DATA_V), which becomes the catalog's ``release``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    catalog_path, truth_path = root / "mock_catalog.csv", root / "mock_truth.parquet"
    truth_writer = None
    with open(catalog_path, "w") as cat:
        cat.write(",".join(CATALOG_COLUMNS) + "\n")
        for chunk in chunks:
            t = chunk.truth
            p = place(t["id"], seed)
            files = []
            for i in range(len(chunk)):
                rel = release_path(p, i)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                header = {
                    "OBSID": int(p.obsid[i]), "DESIG": str(p.designation[i]), "RA": float(p.ra[i]), "DEC": float(p.dec[i]),
                    "LMJD": int(p.lmjd[i]), "MJD": int(p.lmjd[i]) - 1, "PLANID": str(p.planid[i]), "SPID": int(p.spid[i]),
                    "FIBERID": int(p.fiberid[i]), "OBSDATE": str(p.obsdate[i]), "FILENAME": Path(rel).name[:-3],
                    "CLASS": str(t["class"][i]), "SUBCLASS": str(t["subclass"][i])[:60], "Z": float(t["z"][i]),
                    **{f"SNR{b.upper()}": _finite(t[f"snr_{b}"][i]) for b in "ugriz"},
                    "DATA_V": data_v, "OBJTYPE": "Mock", "TEMPLATE": str(t["template"][i])[:60],
                }
                write_lamost_fits(root / rel, layout, WAVELENGTH, chunk.flux[i], chunk.ivar[i], chunk.andmask[i], header=header)
                files.append(rel)
                cat.write(",".join(_csv(v) for v in (
                    p.obsid[i], p.designation[i], p.obsdate[i], p.lmjd[i], p.planid[i], p.spid[i], p.fiberid[i],
                    f"{p.ra[i]:.6f}", f"{p.dec[i]:.6f}", *(f"{_finite(t[f'snr_{b}'][i]):.2f}" for b in "ugriz"),
                    t["class"][i], t["subclass"][i], f"{t['z'][i]:.6f}")) + "\n")
            table = chunk.truth_table().append_column("obsid", pa.array(p.obsid)).append_column("file", pa.array(files))
            if truth_writer is None:
                truth_writer = pq.ParquetWriter(truth_path, table.schema, use_dictionary=False)
            truth_writer.write_table(table)
            if progress:
                progress(len(chunk))
    if truth_writer is not None:
        truth_writer.close()
    return {"root": root, "catalog": catalog_path, "truth": truth_path}


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else -9999.0  # LAMOST's own "no value" in SNR keywords


def _csv(v: object) -> str:
    s = str(v)
    return f'"{s}"' if "," in s else s


PARQUET_ROW_GROUP = 1000


def parquet_schema() -> pa.Schema:
    fields = [("obsid", pa.int64()), ("class", pa.string()), ("subclass", pa.string()), ("template", pa.string()),
              ("z", pa.float64()), ("snr_g", pa.float32()), ("snr_r", pa.float32()), ("ra", pa.float64()),
              ("dec", pa.float64()), ("designation", pa.string()), ("flux", pa.list_(pa.float32())),
              ("ivar", pa.list_(pa.float32())), ("andmask", pa.list_(pa.int32()))]
    meta = {"grid": "LAMOST native log-linear: wavelength = 10**(COEFF0 + COEFF1 * i), vacuum",
            "COEFF0": str(NATIVE_COEFF0), "COEFF1": str(NATIVE_COEFF1), "NPIX": str(N_NATIVE), "DATA_V": "MOCK"}
    return pa.schema(fields, metadata=meta)


def list_rows(a: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    """A 2-D array's rows as one list column (one list per spectrum)."""
    return pa.ListArray.from_arrays(pa.array(np.arange(0, a.size + 1, a.shape[1], dtype=np.int32)),
                                    pa.array(a.reshape(-1), type=typ))


def write_parquet(chunks: Iterator[MockChunk], path: str | Path, seed: int,
                  progress: Callable[[int], None] | None = None) -> Path:
    """One Parquet table of spectra (list columns on the native grid), row groups of ~1000, plain strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = parquet_schema()
    with pq.ParquetWriter(path, schema, use_dictionary=False) as writer:
        buffer: list[pa.Table] = []
        buffered = 0
        for chunk in chunks:
            t = chunk.truth
            p = place(t["id"], seed)

            table = pa.table({
                "obsid": pa.array(p.obsid, pa.int64()), "class": t["class"], "subclass": t["subclass"],
                "template": t["template"], "z": t["z"], "snr_g": pa.array(t["snr_g"], pa.float32()),
                "snr_r": pa.array(t["snr_r"], pa.float32()), "ra": p.ra, "dec": p.dec, "designation": p.designation,
                "flux": list_rows(chunk.flux, pa.float32()), "ivar": list_rows(chunk.ivar, pa.float32()),
                "andmask": list_rows(chunk.andmask, pa.int32()),
            }, schema=schema)
            buffer.append(table)
            buffered += len(table)
            while buffered >= PARQUET_ROW_GROUP:
                merged = pa.concat_tables(buffer)
                writer.write_table(merged.slice(0, PARQUET_ROW_GROUP), row_group_size=PARQUET_ROW_GROUP)
                rest = merged.slice(PARQUET_ROW_GROUP)
                buffer, buffered = ([rest] if len(rest) else []), len(rest)
            if progress:
                progress(len(chunk))
        if buffered:
            writer.write_table(pa.concat_tables(buffer), row_group_size=PARQUET_ROW_GROUP)
    return path
