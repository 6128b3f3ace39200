"""The catalog's columns: one row per input spectrum. Units and descriptions travel as Parquet field
metadata (``unit``, ``description``) so exports (FITS TUNIT/TCOMM, VOTable) can carry them on."""

from __future__ import annotations

import pyarrow as pa

# (name, type, unit, description)
COLUMNS: list[tuple[str, pa.DataType, str, str]] = [
    ("obsid", pa.int64(), "", "LAMOST observation id (null when the file does not give one)"),
    ("source", pa.string(), "", "the input path or URI as given (Parquet inputs: path#row)"),
    ("row", pa.int64(), "", "position of the spectrum in the run's plan: its row in arrays.zarr"),
    ("designation", pa.string(), "", "LAMOST designation, e.g. LAMOST J220848.54-020324.3"),
    ("ra", pa.float64(), "deg", "right ascension (J2000)"),
    ("dec", pa.float64(), "deg", "declination (J2000)"),
    ("lmjd", pa.int32(), "d", "local modified Julian day of the observation"),
    ("planid", pa.string(), "", "LAMOST plan id"),
    ("spid", pa.int32(), "", "spectrograph id"),
    ("fiberid", pa.int32(), "", "fibre id"),
    ("snr_g", pa.float32(), "", "S/N in the g band, from the file header"),
    ("snr_r", pa.float32(), "", "S/N in the r band, from the file header"),
    ("snr_pixel", pa.float32(), "", "median S/N per pixel on the 2600-pixel grid, measured"),
    ("class", pa.string(), "", "predicted class STAR/GALAXY/QSO: the most probable, but a QSO whose lines lie at "
     "rest (NO_QSO_REDSHIFT: STAR where its Balmer series shows, else the next class) or are narrow only "
     "(NO_BROAD_LINE: the next class) is published as another, a STAR showing a galaxy's emission lines "
     "(GALAXY_LINES) as GALAXY, any other GALAXY showing a carbon star's Swan band heads at rest "
     "(CARBON_BANDS) as STAR, and a GALAXY showing a broad H-alpha beside a narrow one at its emission lines' z "
     "(BROAD_H_ALPHA) as QSO; null when the spectrum is unusable"),
    ("prob_star", pa.float32(), "", "calibrated probability of STAR, adjusted to the target class prior"),
    ("prob_galaxy", pa.float32(), "", "calibrated probability of GALAXY, adjusted to the target class prior"),
    ("prob_qso", pa.float32(), "", "calibrated probability of QSO, adjusted to the target class prior"),
    ("prob_star_balanced", pa.float32(), "",
     "calibrated probability of STAR under the balanced 1:1:1 prior: what the spectrum alone says"),
    ("prob_galaxy_balanced", pa.float32(), "",
     "calibrated probability of GALAXY under the balanced 1:1:1 prior: what the spectrum alone says"),
    ("prob_qso_balanced", pa.float32(), "",
     "calibrated probability of QSO under the balanced 1:1:1 prior: what the spectrum alone says"),
    ("confidence", pa.float32(), "",
     "the published class's probability (the top one but for NO_QSO_REDSHIFT, NO_BROAD_LINE, GALAXY_LINES, "
     "CARBON_BANDS and BROAD_H_ALPHA)"),
    ("margin", pa.float32(), "", "the published class's probability minus the highest other's"),
    ("z", pa.float32(), "", "redshift from the published class's templates fitted with the spectrum's ivar "
     "(stars: radial velocity / c); null without a class"),
    ("z_err", pa.float32(), "", "1-sigma error of z: the chi2 curvature's (scaled by sqrt(reduced chi2) when above 1) "
     "and the class's floor in quadrature (stars 9 km/s, galaxies 35, QSOs 20-322 by z)"),
    ("delta_chi2", pa.float32(), "", "chi2 of the second-best solution minus the best: galaxy/QSO another redshift "
     "(> 1000/3000 km/s away; < 0 where one outside the window around the network's proposal fits better), "
     "star the best template of another MK letter"),
    ("subclass", pa.string(), "", "star: MK type of the best-fitting template (G5, K3, A1; WD, CV, C carbon, L); "
     "galaxy: STARFORMING, AGN or PASSIVE from its emission lines; QSO: BAL (broad absorption blueward of "
     "Si IV or C IV) or BROADLINE"),
    ("z_balanced", pa.float32(), "", "redshift fitted as the class the balanced prior picks (argmax of "
     "prob_*_balanced): a sample selected on the balanced probabilities has its redshifts here; equals z "
     "where that class is the published one"),
    ("z_err_balanced", pa.float32(), "", "1-sigma error of z_balanced"),
    ("flags", pa.int64(), "", "quality bitmask (lamost_classify.pipeline.flags)"),
    ("lamost_class", pa.string(), "", "the file's own CLASS, for comparison"),
    ("lamost_subclass", pa.string(), "", "the file's own SUBCLASS"),
    ("lamost_z", pa.float32(), "", "the file's own redshift Z"),
    ("model", pa.string(), "", "model name and sha256 prefix of its card (which holds its weights' sha256)"),
    ("release", pa.string(), "", "data release of the input (e.g. DR5, sample)"),
    ("error", pa.string(), "", "why the spectrum could not be read or classified (null when fine)"),
]

SCHEMA = pa.schema(
    [pa.field(name, typ, metadata={"unit": unit, "description": desc}) for name, typ, unit, desc in COLUMNS]
)
