"""lamost-classify: sort LAMOST low-resolution spectra into STAR, GALAXY and QSO.

The code lives in three sub-packages, in the order the data flows:
``lamost_classify.pipeline`` (read, resample, normalise, the Dask graph, the catalog),
``lamost_classify.model`` (the 1-D DenseNet, training, evaluation, CAM) and
``lamost_classify.mocks`` (the mock-spectrum simulator the model learns from).
What all three must agree on (classes, prior, grids, quality bits) is ``lamost_classify.contract``,
the bottom layer; ``model`` and ``mocks`` import nothing of ``pipeline`` (tests/test_layering.py).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lamost-classify")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Defined in the shared contract; re-exported here because scripts and tests import them from the top.
from lamost_classify.contract import CLASS_NAMES, SURVEY_PRIOR  # noqa: E402

__all__ = ["CLASS_NAMES", "SURVEY_PRIOR", "__version__"]
