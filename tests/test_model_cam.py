"""Class activation maps (section 5.2): shape, range, and they find the feature that decides."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from model_fixtures import LINE_PIXEL, one_torch_thread, trained_tiny  # noqa: F401

from lamost_classify.model.baselines import FCConfig, FullyConnectedNet
from lamost_classify.model.cam import LINES, class_activation_map, plot_cam

matplotlib.use("Agg")


def test_cam_peaks_at_the_planted_line_that_decides_the_class():
    result, _, _, vx, vy = trained_tiny()
    lines = vy > 0  # GALAXY (emission) and QSO (absorption) rows; STARs have no line to find
    cam = class_activation_map(result.model, vx[lines], classes=vy[lines])
    assert cam.shape == (lines.sum(), 2600) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    distance = np.abs(cam.argmax(axis=1) - LINE_PIXEL)
    # Peaks drawn at random would sit a median ~650 pixels away. The net's last feature maps are
    # 16 grid pixels a cell; an emission line is found within a few cells, an absorption line (a
    # missing-flux feature, read partly from its shoulders) within ~8 % of the spectrum.
    emission, absorption = distance[vy[lines] == 1], distance[vy[lines] == 2]
    assert np.median(emission) <= 60, emission
    assert np.median(absorption) <= 200, absorption


def test_cam_of_the_predicted_class_is_in_0_1_with_2600_values():
    result, x, *_ = trained_tiny()
    cam = class_activation_map(result.model, x[:5])
    assert cam.shape == (5, 2600)
    assert np.allclose(cam.min(axis=1), 0.0, atol=1e-6) and np.allclose(cam.max(axis=1), 1.0, atol=1e-3)


def test_cam_needs_feature_maps():
    with pytest.raises(TypeError, match="CAM needs"):
        class_activation_map(FullyConnectedNet(FCConfig()), np.zeros((1, 2600), np.float32))


def test_plot_marks_lines_at_their_observed_wavelengths(tmp_path):
    result, x, *_ = trained_tiny()
    cam = class_activation_map(result.model, x[:1])[0]
    ax = plot_cam(x[0], cam, z=0.1, title="test")
    marked = sorted(t.get_text().strip() for t in ax.texts)
    # At z = 0.1 the grid (3690-9100 A) holds [O II] (4101 A) up to H alpha (7221 A), not Mg II (3078 A).
    assert "H\u03b1" in marked and "[O II]" in marked and "Mg II" not in marked
    ha = [line for line in ax.lines if abs(line.get_xdata()[0] - LINES["H\u03b1"] * 1.1) < 0.01]
    assert ha
    ax.figure.savefig(tmp_path / "cam.png")
    assert (tmp_path / "cam.png").stat().st_size > 5000
