"""What the pipeline calls: load a trained model once, then probabilities (and CAMs) per batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from lamost_classify.contract import (BROAD_CHECK_MIN_QSO_PROB, CLASS_NAMES, GALAXY_LINES_MIN_NON_STAR_PROB, N_PIXELS,
                                      QSO_MIN_Z, SURVEY_PRIOR, model_id)

from .broad_lines import C_KMS, MAX_SHIFT_KMS, broad_line_shown, narrow_lines_only
from .calibration import adjust_to_prior, softmax
from .carbon_bands import swan_bands_at_rest
from .densenet import redshift_estimate
from .galaxy_lines import find_galaxy_lines
from .redshift import RedshiftFitter, RedshiftResult
from .rest_lines import balmer_series_at_rest
from .cam import class_activation_map
from .fastpath import FastPath
from .runtime import resolve_device
from .weights import FLAT_PRIOR, load_weights

# A reduced precision's rows whose two most probable classes lie closer than this are recomputed in
# float32: on 3,000 faint validation mocks bfloat16 moved no label beyond it (bench/RESULTS.md).
REDO_MARGIN = 0.2


def card_target_prior(card: dict) -> tuple[float, ...]:
    """The prior a model's card chooses for survey data: its ``default_target_prior`` (the survey mix,
    adjusted with the strength chosen on a survey-mix test set when the model was made), else the mix."""
    return tuple(card.get("metrics", {}).get("default_target_prior") or SURVEY_PRIOR)


def published_class(probs: np.ndarray, qso_z: np.ndarray, narrow_lines: np.ndarray | None = None,
                    balmer_at_rest: np.ndarray | None = None, galaxy_lines: np.ndarray | None = None,
                    carbon_bands: np.ndarray | None = None, broad_h_alpha: np.ndarray | None = None) -> np.ndarray:
    """(B,) the class the catalog publishes (-1 where ``probs`` is not finite): the most probable, but a QSO
    must have a QSO redshift and a QSO's lines, a star no galaxy's lines, and a galaxy no carbon star's bands
    and no QSO's broad H-alpha.
    Where a QSO shows the Balmer series at rest (``balmer_at_rest``, from ``qso_checks``: a Galactic star's
    lines, whatever z its QSO fit aliased to), STAR; else where its QSO fit (``qso_z``; NaN where not fitted)
    lies below ``QSO_MIN_Z`` or it shows narrow lines only (``narrow_lines``), the next most probable class. A
    STAR that shows a galaxy's emission lines at one z beyond the stars' (``galaxy_lines``,
    ``galaxy_lines.find_galaxy_lines``) is a GALAXY; any other GALAXY that shows a carbon star's Swan band heads
    at rest (``carbon_bands``, ``carbon_bands.swan_bands_at_rest``) is a STAR; a GALAXY that was not the most
    probable QSO and shows a broad H-alpha beside a narrow one at its emission lines' z (``broad_h_alpha``,
    ``broad_h_alpha_of``) is a QSO."""
    probs = np.asarray(probs)
    finite = np.isfinite(probs).all(axis=1)
    classes = np.where(finite, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
    qso = CLASS_NAMES.index("QSO")
    called_qso = classes == qso
    not_qso = np.asarray(qso_z) < QSO_MIN_Z
    if narrow_lines is not None:
        not_qso |= np.asarray(narrow_lines, bool)
    moved = called_qso & not_qso
    others = np.where(np.arange(probs.shape[1]) == qso, -np.inf, probs[moved])
    classes[moved] = others.argmax(axis=1)
    if balmer_at_rest is not None:
        classes[called_qso & np.asarray(balmer_at_rest, bool)] = CLASS_NAMES.index("STAR")
    star, galaxy = CLASS_NAMES.index("STAR"), CLASS_NAMES.index("GALAXY")
    by_lines = np.zeros(len(classes), bool)
    if galaxy_lines is not None:
        by_lines = (classes == star) & np.asarray(galaxy_lines, bool)
        classes[by_lines] = galaxy
    if carbon_bands is not None:
        classes[(classes == galaxy) & ~by_lines & np.asarray(carbon_bands, bool)] = star
    if broad_h_alpha is not None:  # not a QSO the rules above took back: their verdict on its H-alpha stands
        classes[(classes == galaxy) & ~called_qso & np.asarray(broad_h_alpha, bool)] = qso
    return classes


def qso_checks(flux: np.ndarray, ivar: np.ndarray, qso_z: np.ndarray,
               lines_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Balmer series at rest, narrow lines only), (B,) bool each, of rows with a QSO fit at ``qso_z`` (NaN:
    none): two of the reasons ``published_class`` does not publish a QSO (the third, ``qso_z`` below
    ``QSO_MIN_Z``, it reads itself). The series at rest (``rest_lines``) is looked for wherever the fit lies;
    narrow lines (``broad_lines``) at the fit's z, only where that is a QSO's and the series is not at rest,
    and also at ``lines_z`` (NaN: none), the z of a galaxy's emission lines the row shows
    (``find_galaxy_lines``), where that lies beyond the H-alpha fit's reach of the QSO fit's: its narrow lines
    say where a QSO's broad H-alpha would be, whatever z the QSO fit aliased to."""
    flux, qso_z = np.asarray(flux), np.asarray(qso_z, float)
    ivar = np.asarray(ivar).reshape(flux.shape)
    series, narrow = np.zeros(len(qso_z), bool), np.zeros(len(qso_z), bool)
    rows = np.flatnonzero(np.isfinite(qso_z))
    if len(rows):
        series[rows] = balmer_series_at_rest(flux[rows], ivar[rows], qso_z[rows])
    judged = np.isfinite(qso_z) & (qso_z >= QSO_MIN_Z) & ~series
    rows = np.flatnonzero(judged)
    if len(rows):
        narrow[rows] = narrow_lines_only(flux[rows], ivar[rows], qso_z[rows])
    if lines_z is not None:
        lines_z = np.asarray(lines_z, float)
        with np.errstate(invalid="ignore"):
            apart = np.abs(np.log1p(lines_z) - np.log1p(qso_z)) * C_KMS > MAX_SHIFT_KMS
        rows = np.flatnonzero(judged & ~narrow & np.isfinite(lines_z) & apart)
        if len(rows):
            narrow[rows] = narrow_lines_only(flux[rows], ivar[rows], lines_z[rows])
    return series, narrow


def carbon_bands_of(flux: np.ndarray, ivar: np.ndarray, pedestal: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """(B,) bool, a carbon star's Swan band heads at rest (``swan_bands_at_rest``) in the ``rows`` (a (B,) bool
    mask; False elsewhere)."""
    found = np.zeros(len(rows), bool)
    rows = np.flatnonzero(rows)
    if len(rows):
        ivar = np.asarray(ivar).reshape(np.shape(flux))
        found[rows] = swan_bands_at_rest(np.asarray(flux)[rows], ivar[rows],
                                         None if pedestal is None else np.asarray(pedestal)[rows])
    return found


def broad_h_alpha_of(flux: np.ndarray, ivar: np.ndarray, balanced: np.ndarray, lines_z: np.ndarray,
                     rows: np.ndarray) -> np.ndarray:
    """(B,) bool, a broad H-alpha beside a narrow one (``broad_line_shown``) at ``lines_z`` (the z of the galaxy
    emission lines a row shows, NaN: none) in the ``rows`` (a (B,) bool mask) whose QSO probability under the
    balanced prior (``balanced``, (B, 3)) is at least ``BROAD_CHECK_MIN_QSO_PROB`` and whose lines lie at
    ``QSO_MIN_Z`` or beyond; False elsewhere."""
    lines_z = np.asarray(lines_z, float)
    with np.errstate(invalid="ignore"):
        judged = np.asarray(rows, bool) & doubted_galaxy(balanced) & (lines_z >= QSO_MIN_Z)
    found = np.zeros(len(judged), bool)
    rows = np.flatnonzero(judged)
    if len(rows):
        ivar = np.asarray(ivar).reshape(np.shape(flux))
        found[rows] = broad_line_shown(np.asarray(flux)[rows], ivar[rows], lines_z[rows])
    return found


def doubted_galaxy(balanced: np.ndarray) -> np.ndarray:
    """(B,) bool: the network gives QSO at least ``BROAD_CHECK_MIN_QSO_PROB`` under the balanced prior
    (``balanced``, (B, 3)), so a GALAXY's H-alpha is looked at for a broad line."""
    return np.asarray(balanced)[:, CLASS_NAMES.index("QSO")] >= BROAD_CHECK_MIN_QSO_PROB


def unsure_star(balanced: np.ndarray) -> np.ndarray:
    """(B,) bool: the network gives GALAXY and QSO together at least ``GALAXY_LINES_MIN_NON_STAR_PROB`` under the
    balanced prior (``balanced``, (B, 3)), so a STAR's galaxy lines are looked for."""
    balanced = np.asarray(balanced)
    non_star = balanced[:, CLASS_NAMES.index("GALAXY")] + balanced[:, CLASS_NAMES.index("QSO")]
    return non_star >= GALAXY_LINES_MIN_NON_STAR_PROB


def galaxy_lines_of(flux: np.ndarray, ivar: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) bool, a galaxy's emission lines (``find_galaxy_lines``) in the ``rows`` (a (B,) bool mask; False
    elsewhere), and (B,) the lines' z (NaN elsewhere)."""
    found, z = np.zeros(len(rows), bool), np.full(len(rows), np.nan)
    rows = np.flatnonzero(rows)
    if len(rows):
        ivar = np.asarray(ivar).reshape(np.shape(flux))
        found[rows], z[rows] = find_galaxy_lines(np.asarray(flux)[rows], ivar[rows])
    return found, z


class Classifier:
    """A trained network with its temperature and class priors.

    ``predict_proba`` = softmax(logits / T) adjusted from the training prior (flat after balancing)
    to ``target_prior`` (the survey's mix by default; None keeps the training prior);
    ``predict_proba_and_balanced`` adds the same adjusted to the flat prior instead.

    The network runs through ``fastpath.FastPath``: folded for inference, in ``precision`` ('fp32',
    'bf16', 'fp16', or 'auto': fp16 on a GPU, fp32 on the CPU) through ``backend`` ('torch', 'compile' or
    'onnx'), ``max_batch`` spectra at a time (None: the fastest measured for the device).
    """

    def __init__(
        self,
        model: nn.Module,
        card: dict,
        device: str = "auto",
        target_prior: Sequence[float] | None = SURVEY_PRIOR,
        max_batch: int | None = None,
        precision: str = "auto",
        backend: str = "torch",
    ) -> None:
        self.device = resolve_device(device, backend)
        self.model = model.eval()
        self.fast = FastPath(self.model, self.device, precision, backend, max_batch)
        self.precision, self.backend = self.fast.precision, backend
        self.card = card
        self.temperature = float(card.get("temperature", 1.0))
        self.train_prior = tuple(card.get("train_prior", FLAT_PRIOR))
        self.target_prior = None if target_prior is None else tuple(target_prior)
        self.max_batch = self.fast.max_batch
        self.fitter: RedshiftFitter | None = None  # the template fit, made on first use (loads the templates)
        self.name = model_id(card)  # the catalog's model column: weights, temperature and prior

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        device: str = "auto",
        target_prior: Sequence[float] | None | str = "card",
        precision: str = "auto",
        backend: str = "torch",
    ) -> Classifier:
        """``model``: None or 'default' (shipped weights), another shipped name, or a .safetensors path.

        ``target_prior="card"`` takes the card's choice (``card_target_prior``).
        """
        net, card = load_weights(model, device="cpu")
        if isinstance(target_prior, str):
            target_prior = card_target_prior(card)
        return cls(net, card, device, target_prior, precision=precision, backend=backend)

    def _check(self, flux: np.ndarray) -> np.ndarray:
        flux = np.asarray(flux)
        if flux.ndim == 1:
            flux = flux[None, :]
        if flux.ndim != 2 or flux.shape[1] != N_PIXELS:
            raise ValueError(f"expected normalised spectra of shape (batch, {N_PIXELS}), got {flux.shape}")
        return flux

    def logits(self, flux: np.ndarray) -> np.ndarray:
        """Raw network outputs (B, 3) float32, before temperature and prior."""
        return self._outputs(self._check(flux))[:, :self.fast.n_classes]

    def _outputs(self, flux: np.ndarray) -> np.ndarray:
        """The network's outputs (logits, then the redshift head's); in a reduced precision, the rows it
        leaves within ``REDO_MARGIN`` of a tie, under the target prior or the balanced one, recomputed in
        float32: bfloat16 or float16 then moves a label only where it errs by more than the margin (on
        3,000 faint mocks, none: bench/RESULTS.md)."""
        raw = self.fast.outputs(flux)
        if self.fast.precision != "fp32" and len(raw):
            undecided = np.zeros(len(raw), bool)
            for p in self._probabilities(raw[:, :self.fast.n_classes]):
                top_two = np.sort(p, axis=1)[:, -2:]
                undecided |= top_two[:, 1] - top_two[:, 0] < REDO_MARGIN
            if undecided.any():
                raw[undecided] = self.fast.float32_outputs(flux[undecided])
        return raw

    def predict_proba(self, flux: np.ndarray) -> np.ndarray:
        """(B, 3) float32 probabilities of STAR, GALAXY, QSO. Rows with NaN input come back NaN."""
        return self.predict_proba_and_balanced(flux)[0]

    def predict_proba_and_balanced(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3) float32 probabilities under the target prior (``predict_proba``) and under the balanced
        1:1:1 prior (what the spectrum alone says), from one pass of the network."""
        return self._probabilities(self.logits(flux))

    def predict_with_redshift(self, flux: np.ndarray, ivar: np.ndarray,
                              pedestal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, RedshiftResult]:
        """``predict_proba_and_balanced`` plus the redshift and subclass (``model/redshift.py``): the published
        class's templates fitted with ``ivar``, the inverse variance of ``flux`` (normalised units), around
        the network's redshift head's proposal when it has one; ``pedestal``, what the normalisation
        subtracted (``grid.PreparedBatch.pedestal``), is given back to the star fit. One pass of the network.

        The published class (``fit.classes``) is the most probable one, but a QSO must have a QSO redshift and
        broad lines (``published_class``): where it shows the Balmer series in emission at rest (``rest_lines``)
        it is published STAR; where its QSO fit lies below ``QSO_MIN_Z`` (both ``fit.no_qso_redshift``), or
        H-alpha is on the grid at the fit's z, or at the z of a galaxy's emission lines it shows
        (``galaxy_lines``), and shows no broad line (``fit.no_broad_line``, ``broad_lines.narrow_lines_only``),
        as its next most probable class; either fitted as that (the probabilities stay the network's). Both also
        mark rows whose balanced class is a QSO that fails the same way. A row so published STAR that the network
        is not sure of (``unsure_star``) and that shows a galaxy's emission lines at one z beyond the stars'
        (``galaxy_lines``) is published GALAXY
        (``fit.galaxy_lines``), fitted around its lines' z; any other row so published GALAXY that shows a carbon
        star's Swan band heads at rest (``carbon_bands``) is published STAR (``fit.carbon_bands``, also set where
        the balanced prior's GALAXY shows them); a row so published GALAXY, not the network's QSO, that shows a
        broad H-alpha beside a narrow one at its emission lines' z (``broad_h_alpha_of``) is published QSO
        (``fit.broad_h_alpha``), fitted around its lines' z.

        Where the balanced prior picks another class (PRIOR_DOMINATED: a faint galaxy published as STAR),
        that class is fitted too, into ``z_balanced``/``z_err_balanced``: a sample selected on what the
        spectrum alone says (README) then has its redshifts. Elsewhere they repeat ``z``/``z_err``."""
        flux = self._check(flux)
        ivar = np.asarray(ivar).reshape(flux.shape)
        logits, proposal = self._logits_and_proposal(flux)
        probs, balanced = self._probabilities(logits)
        classes = np.where(np.isfinite(probs).all(axis=1), probs.argmax(axis=1), -1)
        pedestal = None if pedestal is None else np.asarray(pedestal).reshape(len(flux))

        def fit_rows(rows: np.ndarray, as_class: np.ndarray, lines_z: np.ndarray | None = None) -> RedshiftResult:
            own = None if proposal is None else (np.asarray(proposal[0])[rows], np.asarray(proposal[1])[rows])
            if lines_z is not None and np.isfinite(lines_z[rows]).any():
                # the emission lines' z, not the head's proposal for a star; the fit's floor sets the window
                z = lines_z[rows]
                own = (np.full(len(rows), np.nan), np.full(len(rows), np.nan)) if own is None else own
                own = np.where(np.isfinite(z), z, own[0]), np.where(np.isfinite(z), 0.0, own[1])
            return self.fitter.fit(flux[rows], ivar[rows], as_class, own, None if pedestal is None else pedestal[rows])

        fit = self.fitter.fit(flux, ivar, classes, proposal, pedestal)
        qso, star, galaxy = CLASS_NAMES.index("QSO"), CLASS_NAMES.index("STAR"), CLASS_NAMES.index("GALAXY")
        qso_z = np.where(classes == qso, fit.z, np.nan)
        data_class = balanced.argmax(axis=1)
        # a galaxy's emission lines where a rule reads them: a STAR's the network is not sure of make it a GALAXY
        # (``unsure_star``); a QSO's (most probable or balanced) and a doubted GALAXY's say where its broad H-alpha
        # would be (``doubted_galaxy``; and a QSO the rules publish STAR is then read as a STAR)
        lines, lines_z = galaxy_lines_of(flux, ivar, ((classes == star) & unsure_star(balanced)) | (classes == qso)
                                         | (data_class == qso) | ((classes == galaxy) & doubted_galaxy(balanced)))
        series, narrow = qso_checks(flux, ivar, qso_z, lines_z)
        published = published_class(probs, qso_z, narrow, series)
        lines &= published == star
        # a carbon star's bands where a row is published GALAXY (not yet by its lines) or is one by the data alone
        carbon = carbon_bands_of(flux, ivar, pedestal, (published == galaxy) | (data_class == galaxy))
        published = published_class(probs, qso_z, narrow, series, lines, carbon)
        broad = broad_h_alpha_of(flux, ivar, balanced, lines_z, (published == galaxy) & (classes != qso))
        published = published_class(probs, qso_z, narrow, series, lines, carbon, broad)
        changed = published != classes
        moved = np.flatnonzero(changed)
        if len(moved):
            fit.classes[moved] = published[moved]
            fit.replace_rows(moved, fit_rows(moved, published[moved], lines_z))
        fit.no_qso_redshift, fit.no_broad_line = ((qso_z < QSO_MIN_Z) | series) & changed, narrow & changed
        fit.galaxy_lines = lines
        fit.carbon_bands = carbon & (published == star)
        fit.broad_h_alpha = broad & (published == qso)
        fit.z_balanced, fit.z_err_balanced = fit.z.copy(), fit.z_err.copy()
        other = np.flatnonzero((classes >= 0) & (data_class != fit.classes))
        if len(other):
            alt = fit_rows(other, data_class[other])
            fit.z_balanced[other], fit.z_err_balanced[other] = alt.z, alt.z_err
        # rows whose most probable class is QSO were checked above (a moved one's z_balanced is that same fit)
        balanced_qso = (data_class == qso) & (classes != qso)
        balanced_z = np.where(balanced_qso, fit.z_balanced, np.nan)
        series, narrow = qso_checks(flux, ivar, balanced_z, lines_z)
        fit.no_qso_redshift |= (balanced_z < QSO_MIN_Z) | series
        fit.no_broad_line |= narrow
        return probs, balanced, fit

    def class_rule_inputs(self, probs: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                          pedestal: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """What ``published_class`` needs, as ``predict_with_redshift`` finds it, from ``probs``, the balanced
        prior's probabilities (``predict_proba_and_balanced``): for the rows whose most probable class is QSO, (B,)
        the QSO fit's z (around the network's redshift proposal; NaN elsewhere) and (B,) bool each, a narrow
        H-alpha alone at that z (or at the z of a galaxy's emission lines the row shows) and the Balmer series at
        rest (``qso_checks``); for every row, (B,) bool, a galaxy's emission lines (``find_galaxy_lines``), which
        ``published_class`` reads only where it publishes STAR, a carbon star's Swan band heads at rest
        (``swan_bands_at_rest``), read only where it publishes GALAXY, and a broad H-alpha at those lines' z
        (``broad_h_alpha_of``), read only where it publishes GALAXY and the row's most probable class is not QSO.
        A prior that lowers QSO against the other classes (the survey's) makes no other row the most probable
        QSO, so the fits for the balanced probabilities serve every such prior."""
        flux = self._check(flux)
        qso = CLASS_NAMES.index("QSO")
        rows = np.flatnonzero(np.asarray(probs).argmax(axis=1) == qso)
        qso_z = np.full(len(flux), np.nan)
        ivar = np.asarray(ivar).reshape(flux.shape)
        if len(rows):
            _, proposal = self._logits_and_proposal(flux[rows])
            qso_z[rows] = self.fitter.fit(flux[rows], ivar[rows], np.full(len(rows), qso), proposal,
                                          None if pedestal is None else np.asarray(pedestal).reshape(-1)[rows]).z
        lines, lines_z = find_galaxy_lines(flux, ivar)
        lines &= unsure_star(probs)  # a row the network is sure is a star is not read (lines_z: no rule reads it)
        series, narrow = qso_checks(flux, ivar, qso_z, lines_z)
        broad = broad_h_alpha_of(flux, ivar, probs, lines_z, np.ones(len(flux), bool))
        return qso_z, narrow, series, lines, swan_bands_at_rest(flux, ivar, pedestal), broad

    def _logits_and_proposal(self, flux: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """One pass of the network: its logits and its redshift head's (z, z_err) proposal (None without a
        head); makes the template fit on first use, as every caller then fits."""
        raw = self._outputs(flux)
        n = self.fast.n_classes
        if self.fitter is None:
            self.fitter = RedshiftFitter(device=self.device)
        return raw[:, :n], (redshift_estimate(raw[:, n:n + 2]) if raw.shape[1] > n else None)

    def _probabilities(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calibrated = softmax(logits, self.temperature)
        balanced = adjust_to_prior(calibrated, FLAT_PRIOR, self.train_prior)
        probs = calibrated if self.target_prior is None else adjust_to_prior(calibrated, self.target_prior,
                                                                             self.train_prior)
        return probs.astype(np.float32), balanced.astype(np.float32)

    def cam(self, flux: np.ndarray) -> np.ndarray:
        """Class activation maps (B, 2600) float32 in [0, 1] of the class ``predict_proba`` picks."""
        flux = self._check(flux)
        if len(flux) == 0:
            return np.zeros((0, N_PIXELS), np.float32)
        chosen = self.predict_proba(flux).argmax(axis=1)
        return np.concatenate([
            class_activation_map(self.fast.net, flux[i:i + self.max_batch], chosen[i:i + self.max_batch])
            for i in range(0, len(flux), self.max_batch)
        ])
