"""The per-spectrum quality bitmask, for people: names and descriptions of its bits.

The bits themselves, and their thresholds, are part of the shared contract (``lamost_classify.contract``),
so that the model's redshift warnings and the pipeline's quality checks set the same integers.
"""

from __future__ import annotations

from lamost_classify.contract import (ARM_MIN_VALID, BROAD_CHECK_MIN_QSO_PROB, BROAD_MIN_SIGMA_KMS,
                                      GALAXY_LINES_MIN_NON_STAR_PROB, GALAXY_LINES_MIN_Z,
                                      LOW_CONFIDENCE, LOW_SNR, MAX_MASKED_FRACTION, MIN_COVERAGE, MIN_GOOD_PIXELS,
                                      NEGATIVE_SIGMA, PRIOR_WINDOW_SIGMA, QSO_MIN_Z, SMALL_DELTA_CHI2, SPIKE_FACTOR,
                                      SPIKE_PIXELS, UNUSABLE, Flag)

__all__ = ["Flag", "UNUSABLE", "MIN_COVERAGE", "MAX_MASKED_FRACTION", "LOW_SNR", "LOW_CONFIDENCE", "SMALL_DELTA_CHI2",
           "MIN_GOOD_PIXELS", "FLAG_DOCS", "UNUSABLE_FLUX_ERRORS", "flag_names", "describe"]


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
    Flag.NEGATIVE_MASKED: f"pixels more than {NEGATIVE_SIGMA:g} sigma below zero (not flux: a defect) were masked",
    Flag.SPIKE_MASKED: (f"pixels over {SPIKE_FACTOR:g}x all but the spectrum's {SPIKE_PIXELS} brightest (a cosmic ray, "
                        "a spike: not flux) were masked"),
    Flag.ARM_MISSING: (f"less than {ARM_MIN_VALID:.0%} of the blue or of the red arm's grid pixels hold data: "
                        "class, subclass and prob_*_balanced read from the other arm alone"),
    Flag.LOW_CONFIDENCE: f"the published class's probability (confidence) below {LOW_CONFIDENCE:g}",
    Flag.INFERENCE_FAILED: "the model failed on this spectrum's batch",
    Flag.PRIOR_DOMINATED: "the class prior decided: under the balanced prior (prob_*_balanced) another class wins",
    Flag.Z_SMALL_DELTA_CHI2: (f"galaxy/QSO: a second redshift fits within delta chi2 {SMALL_DELTA_CHI2:g} of the best, "
                              "or better (outside the window around the network's proposal)"),
    Flag.Z_FIT_LIMIT: ("z at the edge of the fitted range (stars +-420 km/s, galaxies -0.005..1.2, QSOs 0..6, or "
                       f"{PRIOR_WINDOW_SIGMA:g} sigma from the network's proposal)"),
    Flag.Z_FEW_PIXELS: f"fewer than {MIN_GOOD_PIXELS} valid grid pixels for the redshift fit",
    Flag.NO_QSO_REDSHIFT: (f"the network's QSO has its lines at rest, a Galactic star's (a CV, a Be or dMe star): it "
                           f"fits only below z {QSO_MIN_Z:g}, where no QSO is, or shows H-alpha, H-beta and H-gamma "
                           "in emission at z ~ 0, better than a QSO's lines at its fit's z; published STAR where "
                           "the series shows, else as its next class; also set where the balanced prior's QSO "
                           "(z_balanced) does"),
    Flag.NO_BROAD_LINE: (f"the network's QSO shows a narrow H-alpha and no broad one (sigma >= {BROAD_MIN_SIGMA_KMS:g} "
                         "km/s) at its QSO fit's z, or at the z of a galaxy's emission lines it shows (either below "
                         "0.33): a narrow-line galaxy (star-forming, Seyfert 2, LINER), published as its next class; "
                         "also set where the balanced prior's QSO does"),
    Flag.GALAXY_LINES: (f"the network's STAR, with GALAXY + QSO probability >= {GALAXY_LINES_MIN_NON_STAR_PROB:g} "
                        f"under the balanced prior, shows a galaxy's emission lines at one z >= {GALAXY_LINES_MIN_Z:g} "
                        "(three of [O II], H-beta, [O III], H-alpha, [N II], [S II] in emission, one forbidden, none "
                        "on a star's own lines at rest): published GALAXY, fitted as one"),
    Flag.CARBON_BANDS: ("the network's GALAXY shows a carbon star's C2 Swan band heads (4737, 5165, 5636 A) at rest, "
                        "edges no galaxy has at all three: published STAR, fitted as one; also set where the "
                        "balanced prior's GALAXY (prob_*_balanced) does"),
    Flag.BROAD_H_ALPHA: (f"a GALAXY (not the network's QSO) with QSO probability >= {BROAD_CHECK_MIN_QSO_PROB:g} under "
                         f"the balanced prior shows, at the z of its galaxy emission lines (>= {QSO_MIN_Z:g}, H-alpha "
                         "on the grid), a wide broad H-alpha beside a narrow one, plainly detected (README, \"The "
                         "broad-line rule\"): a type 1 AGN whose host's light the network read, published QSO"),
}

# The catalog's error text for a row that has no class because of its flux, not because of a read error.
UNUSABLE_FLUX_ERRORS: dict[Flag, str] = {
    Flag.NO_FLUX: "no usable flux pixel on the grid",
    Flag.CONSTANT_FLUX: "constant flux: normalisation undefined",
}
