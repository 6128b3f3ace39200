"""Readers check the instrument, not only the shape: a file of another instrument with the same shape is
routed to its own reader or refused with a reason, never misread. Also the size caps (gzip bombs)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits
from conftest import SHARED_DATA

from lamost_classify.mocks.writers import data_block, header_block, write_lamost_fits, write_sdss_spec
from lamost_classify.pipeline import grid
from lamost_classify.pipeline.flags import Flag
from lamost_classify.pipeline.readers import read_batch, read_spectrum
from lamost_classify.pipeline.readers.read import MAX_FILE_BYTES, DecompressedTooLarge, gunzip
from lamost_classify.pipeline.readers.sdss_spspec import air_to_vacuum
from lamost_classify.pipeline.spectrum import SpectrumReadError

N = 3855
SPSPEC_COEFF0 = 3.5794
REAL_SPSPEC = SHARED_DATA / "sdss" / "dr7-spSpec-star" / "dr6spec-52199-0659-338.fit"
requires_spspec = pytest.mark.skipif(not REAL_SPSPEC.is_file(), reason=f"{REAL_SPSPEC} not found (../shared absent)")
SPSPEC_HEADER = {
    "TELESCOP": "SDSS 2.5-M", "RA": 17.28, "DEC": -9.77, "RAOBJ": 16.2, "DECOBJ": -8.7, "MJD": 52199,
    "PLATEID": 659, "FIBERID": 338, "SPECID": 2, "SN_G": 36.8, "SN_R": 43.5, "VACUUM": True,
    "ARRAY1": "SPECTRUM", "ARRAY2": "CONTINUUM-SUBTRACTED SPECTRUM", "ARRAY3": "ERROR", "ARRAY4": "MASK",
    "COEFF0": SPSPEC_COEFF0, "COEFF1": 1e-4, "SPEC_CLN": 2, "Z": 0.061,
}


def spspec_rows(n: int = N) -> np.ndarray:
    """flux, continuum-subtracted flux, sigma, mask, (unused): an spSpec image. Row 1 swings negative and
    row 2 is small, so a reader that takes them for LAMOST's ivar/wavelength rows is easy to catch."""
    rng = np.random.default_rng(7)
    flux = 50 + 10 * np.sin(np.arange(n) / 40) + rng.normal(0, 1, n)
    sigma = rng.uniform(0.5, 2.0, n)
    sigma[:20] = 0  # no data
    sigma[30] = -1
    mask = np.zeros(n)
    mask[100:105] = 2**24
    return np.stack([flux, flux - 50, sigma, mask, np.zeros(n)])


def spspec(header: dict | None = None, rows: np.ndarray | None = None) -> bytes:
    """An SDSS DR7 spSpec file, written by hand (the mocks write no such files)."""
    rows = spspec_rows() if rows is None else rows
    cards = {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": rows.shape[1], "NAXIS2": rows.shape[0],
             "EXTEND": True, **{**SPSPEC_HEADER, **(header or {})}}
    return header_block(cards) + data_block(rows.astype(">f4"))


NATIVE = 10 ** (3.5682 + 1e-4 * np.arange(3909))


def lamost(layout: str, header: dict | None = None) -> bytes:
    rng = np.random.default_rng(1)
    flux = 100 + rng.normal(0, 2, NATIVE.size)
    return write_lamost_fits(None, layout, NATIVE, flux, np.full(NATIVE.size, 0.2), np.zeros(NATIVE.size),
                             header={"OBSID": 1, "RA": 1.0, "DEC": 2.0, **(header or {})})


def sdss_spec(header: dict | None = None) -> bytes:
    wavelength = 10 ** (3.5570 + 1e-4 * np.arange(4600))
    return write_sdss_spec(None, wavelength, np.ones(4600), np.ones(4600), np.zeros(4600, np.int32), header=header)


# name -> (file bytes, the reader it must go to, or None and the words of the refusal)
CASES = {
    "spSpec -> its own reader": (spspec(), "sdss_spspec", None),
    "spSpec without TELESCOP": (spspec({"TELESCOP": None}), None, "names no instrument"),
    "spSpec claiming LAMOST (ARRAYn rows are SDSS's)": (spspec({"TELESCOP": "LAMOST"}), None,
                                                         "no reader knows this LAMOST FITS layout"),
    "spSpec of another telescope": (spspec({"TELESCOP": "WHT"}), None, "no reader for this instrument (TELESCOP = 'WHT')"),
    "LAMOST DR1 -> DR1 reader": (lamost("dr1"), "lamost_dr1", None),
    "LAMOST DR1 claiming SDSS": (lamost("dr1", {"TELESCOP": "SDSS 2.5-M", "ORIGIN": None}), None,
                                 "no reader knows this SDSS FITS layout"),
    "LAMOST DR1 without TELESCOP/ORIGIN": (lamost("dr1", {"TELESCOP": None, "ORIGIN": None}), None, "names no instrument"),
    "LAMOST DR2-8 -> image reader": (lamost("dr2-8"), "lamost_image", None),
    "LAMOST DR2-8 by ORIGIN alone": (lamost("dr2-8", {"TELESCOP": None}), "lamost_image", None),
    "LAMOST DR2-8 of another telescope": (lamost("dr2-8", {"TELESCOP": "WHT", "ORIGIN": "ING"}), None,
                                          "TELESCOP = 'WHT', ORIGIN = 'ING'"),
    "LAMOST-written file of another telescope": (lamost("dr2-8", {"TELESCOP": "WHT"}), None,
                                                 "no reader for this instrument (TELESCOP = 'WHT', ORIGIN = 'NAOC-LAMOST')"),
    "LAMOST DR2-8 whose EXTEN0 says row 2 is a subcontinuum": (
        lamost("dr2-8", {"EXTEN0": "Flux Inverse Subcontinuum Andmask Ormask"}), None, "no reader knows this LAMOST"),
    "LAMOST DR1 whose EXTEN0 names its rows": (
        lamost("dr1", {"EXTEN0": "Flux, Inverse, Subcontinuum, Andmask, Ormask"}), "lamost_dr1", None),
    "LAMOST v2 COADD -> COADD reader": (lamost("v2"), "lamost_coadd", None),
    "LAMOST v2 COADD claiming SDSS": (lamost("v2", {"TELESCOP": "SDSS 2.5-M", "ORIGIN": None}), None,
                                      "no reader knows this SDSS FITS layout"),
    "SDSS spec -> SDSS reader": (sdss_spec(), "sdss", None),
    "SDSS spec claiming LAMOST": (sdss_spec({"TELESCOP": "LAMOST"}), None, "no reader knows this LAMOST FITS layout"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_file_goes_to_its_instruments_reader_or_is_refused(name):
    data, reader, refusal = CASES[name]
    if reader is not None:
        assert read_spectrum(data).layout == reader
        return
    with pytest.raises(SpectrumReadError, match=r"^odd\.fits: ") as caught:
        read_spectrum(data, source="odd.fits")
    assert refusal in str(caught.value)
    # In a batch: an UNREADABLE record carrying that reason, never a spectrum read by its shape.
    (record,) = read_batch([data])
    assert record.flags == Flag.UNREADABLE and refusal in record.meta["error"] and record.flux.size == 0


def test_spspec_rows_are_read_as_sdss_names_them():
    rows = spspec_rows()
    s = read_spectrum(spspec(rows=rows))
    np.testing.assert_array_equal(s.flux, rows[0].astype(np.float32))
    sigma = rows[2].astype(np.float32).astype(np.float64)
    good = sigma > 0
    np.testing.assert_allclose(s.ivar[good], 1 / sigma[good] ** 2, rtol=1e-6)
    assert (s.ivar[~good] == 0).all() and (~good).sum() == 21
    assert (s.andmask != 0).sum() == 5 and s.andmask[100] == 2**24
    np.testing.assert_allclose(s.wavelength, 10 ** (SPSPEC_COEFF0 + 1e-4 * np.arange(N)), rtol=1e-12)
    m = s.meta
    assert (m["lamost_class"], m["lamost_subclass"], m["lamost_z"]) == ("GALAXY", None, 0.061)
    assert (m["ra"], m["dec"]) == (16.2, -8.7)  # the object, not the plate centre (RA/DEC)
    assert (m["designation"], m["planid"], m["spid"], m["fiberid"], m["mjd"]) == ("SDSS 0659-52199-0338", "659", 2, 338, 52199)
    assert m["obsid"] is None and s.flags == Flag.MISSING_METADATA
    out = grid.prepare([s])
    assert out.flags[0] & ~Flag.MISSING_METADATA == 0 and out.coverage[0] > 0.95


@pytest.mark.parametrize(("code", "expected"), [(1, ("STAR", None)), (3, ("QSO", None)), (4, ("QSO", "HIZ_QSO")),
                                                 (6, ("STAR", "STAR_LATE")), (7, ("GALAXY", "GAL_EM"))])
def test_spspec_class_codes(code, expected):
    meta = read_spectrum(spspec({"SPEC_CLN": code})).meta
    assert (meta["lamost_class"], meta["lamost_subclass"]) == expected


def test_air_wavelengths_are_converted_to_vacuum():
    # H-alpha: 6562.80 A in air, 6564.61 A in vacuum (NIST).
    assert air_to_vacuum(np.array([6562.80]))[0] == pytest.approx(6564.61, abs=0.01)
    vacuum = read_spectrum(spspec()).wavelength
    air = read_spectrum(spspec({"VACUUM": False})).wavelength
    np.testing.assert_allclose(air, air_to_vacuum(vacuum), rtol=1e-12)
    assert 1.0 < (air - vacuum)[0] < 1.2 and 2.4 < (air - vacuum)[-1] < 2.6  # ~1.1 A at 3800 A, ~2.5 A at 9200 A


@requires_spspec
def test_the_real_dr7_spspec_star_is_read_by_its_row_names():
    s = read_spectrum(REAL_SPSPEC)
    assert s.layout == "sdss_spspec"
    with fits.open(REAL_SPSPEC) as hdul:
        header, rows = hdul[0].header, hdul[0].data
        np.testing.assert_array_equal(s.flux, rows[0])
        sigma = rows[2].astype(np.float64)
        np.testing.assert_allclose(s.ivar[sigma > 0], (1 / sigma[sigma > 0] ** 2).astype(np.float32), rtol=1e-6)
        assert (s.ivar[sigma <= 0] == 0).all()
        np.testing.assert_allclose(s.wavelength, 10 ** (header["COEFF0"] + header["COEFF1"] * np.arange(rows.shape[1])))
        assert header["VACUUM"] is True
        assert (s.meta["ra"], s.meta["dec"], s.meta["lamost_z"]) == (header["RAOBJ"], header["DECOBJ"], header["Z"])
    assert s.meta["lamost_class"] == "STAR" and s.meta["fiberid"] == 338
    assert (s.ivar <= 0).mean() < 0.01  # read as a LAMOST DR1 file, row 1 made ~half the pixels "masked"
    out = grid.prepare([s])
    assert out.flags[0] == Flag.MISSING_METADATA and out.coverage[0] > 0.95
    # The measured S/N agrees with the header's (SN_G 36.8, SN_R 43.5): sigma was read as sigma.
    assert 30 < out.snr[0] < 60


# ---------------------------------------------------------------- size caps


def test_gunzip_stops_at_its_limit_across_members():
    assert gunzip(gzip.compress(b"x" * 1000), limit=1000) == b"x" * 1000
    with pytest.raises(DecompressedTooLarge):
        gunzip(gzip.compress(b"x" * 1001), limit=1000)
    with pytest.raises(DecompressedTooLarge):  # each member is small, together they are not
        gunzip(gzip.compress(b"x" * 600) + gzip.compress(b"x" * 600), limit=1000)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    bomb = tmp_path / "spec-bomb.fits.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(b"SIMPLE  =" + b"\0" * (MAX_FILE_BYTES + 10))
    assert bomb.stat().st_size < MAX_FILE_BYTES // 100
    (record,) = read_batch([bomb])
    assert record.flags == Flag.UNREADABLE
    assert record.meta["error"] == (f"{bomb}: decompressed size exceeds 64 MB: not a spectrum file? "
                                    "(a LAMOST or SDSS spectrum is under ~1 MB)")


def test_an_oversized_file_is_refused(tmp_path):
    big = tmp_path / "spec-big.fits"
    with open(big, "wb") as out:
        out.write(b"SIMPLE  =")
        out.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(SpectrumReadError, match=r"file size exceeds 64 MB: not a spectrum file\?"):
        read_spectrum(big)


@pytest.mark.skipif(not (SHARED_DATA / "sdss").is_dir() or not (SHARED_DATA / "lamost").is_dir(),
                    reason=f"real files not found under {SHARED_DATA} (../shared absent)")
def test_every_real_file_goes_to_its_instruments_reader():
    paths = sorted(p for p in SHARED_DATA.rglob("*.fit*") if "templates" not in p.parts)
    readers = {"lamost": {"lamost_dr1", "lamost_image", "lamost_coadd"}, "sdss": {"sdss", "sdss_spspec"}}
    for path, s in zip(paths, read_batch(paths)):
        with fits.open(path) as hdul:
            telescope = hdul[0].header["TELESCOP"]
        assert s.layout in readers["lamost" if telescope == "LAMOST" else "sdss"], (path, s.meta.get("error"))
    assert len(paths) > 1300


REAL_RED_HALF_FLAGGED = SHARED_DATA / "sdss" / "qso" / "spec-0332-52367-0639.fits"


@pytest.mark.skipif(not REAL_RED_HALF_FLAGGED.exists(), reason="needs ../shared/data/sdss")
def test_an_sdss_spectrum_keeps_the_pixels_sdss_itself_fits():
    """This real QSO's AND mask marks its whole red CCD MANYBADCOLUMNS, over good flux and ivar:
    masking every nonzero bit dropped H-alpha and half the spectrum, silently. SDSS's own pipeline leaves
    out only BRIGHTSKY (grown by 2 pixels) there; so does the reader."""
    s = read_spectrum(REAL_RED_HALF_FLAGGED)
    red = s.wavelength > 6500
    assert (s.andmask[red] == 0).mean() > 0.95
    out = grid.prepare([s])
    assert out.coverage[0] > 0.9 and not out.flags[0] & Flag.MANY_MASKED
