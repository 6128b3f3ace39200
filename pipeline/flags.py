"""The per-spectrum quality bitmask: every bit in one place.

Bits 0-15 are set while reading and preparing a spectrum, bits 16-31 by the model stage.
Unused bits are reserved for later additions; never renumber a bit, catalogs store the integer.
"""

from __future__ import annotations

import enum


class Flag(enum.IntFlag):
    # --- reading and preparation (bits 0-15) ---
    UNREADABLE = 1 << 0  # the file could not be opened or parsed (corrupt, truncated, not FITS, empty)
    NO_FLUX = 1 << 1  # no usable flux pixel on the grid (all masked, all zero, all non-finite)
    LOW_COVERAGE = 1 << 2  # less than MIN_COVERAGE of the 3690-9100 A grid has data
    MANY_MASKED = 1 << 3  # more than MAX_MASKED_FRACTION of the covered grid pixels are masked
    LOW_SNR = 1 << 4  # median S/N per pixel below LOW_SNR
    NONFINITE_REPAIRED = 1 << 5  # NaN/inf flux or ivar found in the file and masked
    CONSTANT_FLUX = 1 << 6  # min == max over the valid pixels: min-max normalisation undefined
    MISSING_METADATA = 1 << 7  # OBSID, RA or DEC absent from the file
    # bits 8-15 reserved for later reader-level checks
    # --- model stage (bits 16-31) ---
    LOW_CONFIDENCE = 1 << 16  # top class probability below LOW_CONFIDENCE
    INFERENCE_FAILED = 1 << 17  # the model raised on this spectrum's batch (error text in the catalog)
    PRIOR_DOMINATED = 1 << 18  # the class under the balanced prior (the spectrum alone) is not the published one
    # redshift warnings, as redrock's ZWARN (model/redshift.py)
    Z_SMALL_DELTA_CHI2 = 1 << 19  # galaxy/QSO: another redshift fits almost as well (delta_chi2 < SMALL_DELTA_CHI2)
    Z_FIT_LIMIT = 1 << 20  # the best redshift is at the edge of the range fitted for the class
    Z_FEW_PIXELS = 1 << 21  # fewer than MIN_GOOD_PIXELS valid grid pixels in the redshift fit


# A spectrum with any of these bits has no class in the catalog: the network never saw a usable input.
UNUSABLE = Flag.UNREADABLE | Flag.NO_FLUX | Flag.CONSTANT_FLUX | Flag.INFERENCE_FAILED

# Thresholds for the bits above.
MIN_COVERAGE = 0.5
MAX_MASKED_FRACTION = 0.2
LOW_SNR = 3.0
LOW_CONFIDENCE = 0.6
SMALL_DELTA_CHI2 = 9.0  # redrock's: below it a second redshift is about as likely as the best
MIN_GOOD_PIXELS = 500  # a fifth of the grid


def flag_names(value: int) -> list[str]:
    """The names of the bits set in ``value``, lowest bit first."""
    return [f.name for f in Flag if value & f]


def describe() -> str:
    """A table of every bit, for ``--help`` texts and the README."""
    return "\n".join(f"{f.value.bit_length() - 1:2d}  {f.name:<20s} {FLAG_DOCS[f]}" for f in Flag)


FLAG_DOCS: dict[Flag, str] = {
    Flag.UNREADABLE: "file could not be opened or parsed (corrupt, truncated, not FITS, empty)",
    Flag.NO_FLUX: "no usable flux pixel on the grid (all masked, zero or non-finite)",
    Flag.LOW_COVERAGE: f"less than {MIN_COVERAGE:.0%} of the 3690-9100 A grid has data",
    Flag.MANY_MASKED: f"more than {MAX_MASKED_FRACTION:.0%} of the covered grid pixels masked",
    Flag.LOW_SNR: f"median S/N per pixel below {LOW_SNR:g}",
    Flag.NONFINITE_REPAIRED: "NaN/inf values in the file were masked",
    Flag.CONSTANT_FLUX: "min == max over the valid pixels (normalisation undefined)",
    Flag.MISSING_METADATA: "OBSID, RA or DEC absent from the file",
    Flag.LOW_CONFIDENCE: f"top class probability below {LOW_CONFIDENCE:g}",
    Flag.INFERENCE_FAILED: "the model failed on this spectrum's batch",
    Flag.PRIOR_DOMINATED: "the class prior decided: under the balanced prior (prob_*_balanced) another class wins",
    Flag.Z_SMALL_DELTA_CHI2: f"galaxy/QSO: a second redshift fits within delta chi2 {SMALL_DELTA_CHI2:g} of the best",
    Flag.Z_FIT_LIMIT: "z at the edge of the fitted range (stars +-420 km/s, galaxies -0.005..1.2, QSOs 0..6)",
    Flag.Z_FEW_PIXELS: f"fewer than {MIN_GOOD_PIXELS} valid grid pixels for the redshift fit",
}

# The catalog's error text for a row that has no class because of its flux, not because of a read error.
UNUSABLE_FLUX_ERRORS: dict[Flag, str] = {
    Flag.NO_FLUX: "no usable flux pixel on the grid",
    Flag.CONSTANT_FLUX: "constant flux: normalisation undefined",
}
