"""lamost-classify: sort LAMOST low-resolution spectra into STAR, GALAXY and QSO.

The code lives in three sub-packages, in the order the data flows:
``lamost_classify.pipeline`` (read, resample, normalise, the Dask graph, the catalog),
``lamost_classify.model`` (the 1-D DenseNet, training, evaluation, CAM) and
``lamost_classify.mocks`` (the mock-spectrum simulator the model learns from).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lamost-classify")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

CLASS_NAMES: tuple[str, ...] = ("STAR", "GALAXY", "QSO")
# The class mix of the LAMOST survey as the paper measured it (section 4.2): the prior the model's
# probabilities are adjusted to by default.
SURVEY_PRIOR: tuple[float, ...] = (0.985, 0.012, 0.003)
