"""The shared contract: what the pipeline, the model and the mocks must agree on, defined once.

The bottom of the package: ``pipeline/``, ``model/`` and ``mocks/`` import from here, and this module
imports only numpy and the standard library (``tests/test_layering.py`` holds it to that). Changing a
value here changes what every catalog, every trained weight file and every mock means: the classes and
their order, the 2600-pixel grid the network reads, the native LAMOST grid the files and mocks are on,
and the quality bits a catalog stores as an integer.
"""

from __future__ import annotations

import enum
import hashlib
import json

import numpy as np

# --- classes ---------------------------------------------------------------------------------------

#: The network's outputs, in this order (probability columns, weight files, truth tables, mocks).
CLASS_NAMES: tuple[str, ...] = ("STAR", "GALAXY", "QSO")
#: The class mix of the LAMOST survey as the paper measured it (section 4.2): the prior the model's
#: probabilities are adjusted to by default, and the mix the survey-like mocks are drawn from.
SURVEY_PRIOR: tuple[float, ...] = (0.985, 0.012, 0.003)

# --- the network's grid: the paper's 2600 pixels, 3690-9100 A, log-linear --------------------------

N_PIXELS = 2600
WAVE_MIN = 3690.0
WAVE_MAX = 9100.0
LOG_WAVELENGTH = np.linspace(np.log10(WAVE_MIN), np.log10(WAVE_MAX), N_PIXELS)
WAVELENGTH = 10.0**LOG_WAVELENGTH  #: centres of the 2600 pixels, vacuum Angstrom
#: Value of every pixel of a row with no usable flux (NO_FLUX, CONSTANT_FLUX) after normalisation.
#: Masked and uncovered pixels of other rows are ``fill_masked``'s interpolation instead: as 0-runs
#: (the paper's bad-pixel augmentation's value) they read as absorption, and QSOs and galaxies with many
#: masked pixels were called STAR (README).
FILL_VALUE = 0.0


def fill_masked(flux: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows ``flux`` (B, N) with each pixel that is not ``valid`` (B, N) replaced by the straight line
    between the nearest valid pixels on either side, or by the nearest valid pixel beyond a row's first
    or last one; rows without a valid pixel are returned as they are."""
    out = np.array(np.atleast_2d(flux), copy=True)
    valid = np.atleast_2d(valid)
    pixel = np.arange(out.shape[1])
    # one np.interp per row that needs it: 3x faster than index arithmetic over the whole block
    for i in np.flatnonzero(~valid.all(axis=1) & valid.any(axis=1)):
        usable = valid[i]
        out[i, ~usable] = np.interp(pixel[~usable], pixel[usable], out[i, usable])
    return out


# --- the native LAMOST low-resolution grid: lambda_i = 10**(COEFF0 + COEFF1 * i), vacuum A --------

NATIVE_COEFF0 = 3.5682  # the files' COEFF0 header keyword
NATIVE_COEFF1 = 1e-4  # the files' COEFF1: the step in log10(lambda)
N_NATIVE = 3909
NATIVE_LOG_WAVELENGTH = NATIVE_COEFF0 + NATIVE_COEFF1 * np.arange(N_NATIVE)
NATIVE_WAVELENGTH = 10.0**NATIVE_LOG_WAVELENGTH  #: native pixel centres, vacuum Angstrom

#: Angstrom: the blue arm ends and the red arm starts in this range (the dichroic).
ARM_JOIN: tuple[float, float] = (5700.0, 5900.0)

# --- a catalog directory's files: the pipeline writes them, query finds them -----------------------

PARQUET_DIR = "parquet"  # one file per batch
ZARR_STORE = "arrays.zarr"
MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.parquet"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lamost-classify.lock"


def model_id(card: dict) -> str:
    """The catalog's ``model`` value: the card's name and a sha256 prefix of the whole card. The card holds
    the weights' sha256 (checked on every load), so one id names weights, temperature and priors together:
    the same weights under another prior, or a card edited by hand, get a new id."""
    digest = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()
    return f"{card.get('name', card.get('preset', 'model'))}@{digest[:12]}"


# --- the per-spectrum quality bitmask ---------------------------------------------------------------
# Bits 0-15 are set while reading and preparing a spectrum, bits 16-31 by the model stage. Unused bits
# are reserved for later additions; never renumber a bit, catalogs store the integer. Their
# descriptions for people are in ``pipeline.flags``.


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
    NEGATIVE_MASKED = 1 << 8  # pixels more than NEGATIVE_SIGMA below zero found and masked
    SPIKE_MASKED = 1 << 9  # pixels SPIKE_FACTOR times above the spectrum's flux level found and masked
    ARM_MISSING = 1 << 10  # less than ARM_MIN_VALID of the blue or of the red arm's grid pixels hold data
    # bits 11-15 reserved for later reader-level checks
    # --- model stage (bits 16-31) ---
    LOW_CONFIDENCE = 1 << 16  # the published class's probability below LOW_CONFIDENCE
    INFERENCE_FAILED = 1 << 17  # the model raised on this spectrum's batch (error text in the catalog)
    PRIOR_DOMINATED = 1 << 18  # the class under the balanced prior (the spectrum alone) is not the most probable
    # redshift warnings, as redrock's ZWARN (model/redshift.py)
    Z_SMALL_DELTA_CHI2 = 1 << 19  # galaxy/QSO: another z fits almost as well or better (delta_chi2 < SMALL_DELTA_CHI2)
    Z_FIT_LIMIT = 1 << 20  # the best redshift is at the edge of the class's range or of the proposal's window
    Z_FEW_PIXELS = 1 << 21  # fewer than MIN_GOOD_PIXELS valid grid pixels in the redshift fit
    NO_QSO_REDSHIFT = 1 << 22  # the network's QSO has its lines at rest (a star's): published STAR or its next class
    NO_BROAD_LINE = 1 << 23  # the network's QSO shows a narrow H-alpha alone (at its z or its lines'): its next class
    GALAXY_LINES = 1 << 24  # the network's STAR shows a galaxy's emission lines at one z >= 0.01: published GALAXY
    CARBON_BANDS = 1 << 25  # the network's GALAXY shows a carbon star's Swan band heads at rest: published STAR
    BROAD_H_ALPHA = 1 << 26  # a GALAXY shows a broad H-alpha beside a narrow one at its lines' z: published QSO


# A spectrum with any of these bits has no class in the catalog: the network never saw a usable input.
UNUSABLE = Flag.UNREADABLE | Flag.NO_FLUX | Flag.CONSTANT_FLUX | Flag.INFERENCE_FAILED

# Thresholds for the bits above.
MIN_COVERAGE = 0.5
MAX_MASKED_FRACTION = 0.2
LOW_SNR = 3.0
# No flux is this many sigma below zero: such a pixel is a defect (sky over-subtraction, a negative spike)
# and, as the min-max normalisation's minimum, would lift the whole spectrum off zero (README).
NEGATIVE_SIGMA = 10.0
# Nor is a pixel SPIKE_FACTOR times the spectrum's (SPIKE_PIXELS + 1)-th largest |flux|: a cosmic ray or an
# unmasked spike, which as the normalisation's maximum would squash the rest of the spectrum to nothing (README).
SPIKE_FACTOR = 100.0
SPIKE_PIXELS = 20
# The network learnt from both arms: with one mostly gone it was never trained for what is left (a real
# star with its blue arm blanked comes out GALAXY or QSO under the balanced prior, README).
ARM_MIN_VALID = 0.5
LOW_CONFIDENCE = 0.6
SMALL_DELTA_CHI2 = 9.0  # redrock's: below it a second redshift is about as likely as the best
# The galaxy and QSO fit searches within this many sigmas of the network's redshift proposal (model/redshift.py)
PRIOR_WINDOW_SIGMA = 4.0
MIN_GOOD_PIXELS = 500  # a fifth of the grid
# No QSO lies nearer than this: DESI's redrock QSO templates (rrtemplate-QSO-LOZ) start here, and a broad-line
# spectrum at rest is a Galactic emission-line star (a CV, a Be star), whose lines the network reads as a QSO's.
QSO_MIN_Z = 0.05
# A QSO has broad permitted lines: where H-alpha lies on the grid, a QSO fit must not show a narrow H-alpha alone
# (model/broad_lines.py); a broad one is at least this wide (sigma, km/s: FWHM 1,650, above the narrow lines
# of Seyfert 2s and LINERs, below narrow-line Seyfert 1s' broad lines).
BROAD_MIN_SIGMA_KMS = 700.0
# A star shows no galaxy's emission lines: forbidden lines, or H-alpha and H-beta, lined up at one z from here
# (3,000 km/s, beyond any Galactic star's velocity) make the network's STAR a GALAXY (model/galaxy_lines.py).
GALAXY_LINES_MIN_Z = 0.01
# ... read on a STAR to which the network gives at least this GALAXY + QSO probability under the balanced prior:
# below it the network is sure of its star (96% of real LAMOST stars; every row the rule moved on the
# leave-one-family-out folds had 35x more) and the scan is the redshift outputs' dearest step (bench/RESULTS.md).
GALAXY_LINES_MIN_NON_STAR_PROB = 1e-4
# A galaxy shows no broad H-alpha: a GALAXY to which the network gives at least this QSO probability under the
# balanced prior is checked for one at its emission lines' z (model/broad_lines.py); below it the network is sure
# of its galaxy and the check's fit is not worth its time (bench/RESULTS.md).
BROAD_CHECK_MIN_QSO_PROB = 0.01
# How a row's class is chosen from the network's probabilities and the fits (model.inference.published_class):
# a run's manifest records it, so that a resume never mixes batches published by two rules.
CLASS_RULE = (f"most probable; a QSO showing the Balmer series at rest is a STAR; one fitted below z {QSO_MIN_Z:g}, or "
              f"showing a narrow H-alpha and no broad one (sigma >= {BROAD_MIN_SIGMA_KMS:g} km/s) at its fit's z or "
              f"at its galaxy emission lines' z, takes the next; "
              f"a STAR with GALAXY + QSO probability >= {GALAXY_LINES_MIN_NON_STAR_PROB:g} under the balanced prior "
              f"showing a galaxy's emission lines at one z >= {GALAXY_LINES_MIN_Z:g} is a GALAXY; "
              "any other GALAXY showing a carbon star's C2 Swan band heads at rest is a STAR; a GALAXY not the "
              f"network's QSO, with QSO probability >= {BROAD_CHECK_MIN_QSO_PROB:g} under the balanced prior, "
              f"showing a broad H-alpha beside a narrow one at its galaxy emission lines' z >= {QSO_MIN_Z:g} is a QSO")
