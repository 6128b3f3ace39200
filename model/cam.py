"""Class activation maps (section 5.2, Zhou et al. 2016): where along the spectrum the network looked.

The paper's recipe: 1) the predicted class c; 2) the weights w_c of the fully connected layer from the
globally pooled features to class c; 3) M = sum over channels of w_c x the last feature maps before
global pooling; 4) M min-max normalised and interpolated (linearly) to the input's 2600 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lamost_classify.contract import N_PIXELS, WAVELENGTH

# Rest-frame vacuum wavelengths (Angstrom) of the lines the CAM plot marks. LAMOST is in vacuum.
LINES: dict[str, float] = {
    "Ly\u03b1": 1215.7, "C IV": 1549.5, "C III]": 1908.7, "Mg II": 2799.1, "[O II]": 3728.5,
    "Ca II K": 3934.8, "Ca II H": 3969.6, "H\u03b4": 4102.9, "H\u03b3": 4341.7, "H\u03b2": 4862.7,
    "[O III]": 5008.2, "Mg b": 5176.7, "Na D": 5895.6, "H\u03b1": 6564.6,
}


def class_activation_map(
    model: nn.Module, flux: np.ndarray | torch.Tensor, classes: Sequence[int] | None = None,
    n_pixels: int = N_PIXELS,
) -> np.ndarray:
    """CAM (B, n_pixels) float32 in [0, 1] for the predicted class (or ``classes`` when given).

    ``model`` needs ``features`` (maps before global pooling) and a linear ``classifier``, as
    ``SpectralDenseNet`` has. A flat map (all equal) comes back as zeros.
    """
    if not hasattr(model, "features") or not isinstance(getattr(model, "classifier", None), nn.Linear):
        raise TypeError(f"{type(model).__name__} has no convolutional feature maps: CAM needs a SpectralDenseNet")
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(flux, dtype=np.float32) if not torch.is_tensor(flux) else flux,
                        dtype=torch.float32, device=device)
    if x.ndim == 1:
        x = x.unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            maps = model.features(x)  # (B, C, L)
            if classes is None:
                chosen = model.classifier(maps.mean(dim=2)).argmax(dim=1)
            else:
                chosen = torch.as_tensor(classes, device=device).reshape(-1).expand(len(x))
            weights = model.classifier.weight[chosen]  # (B, C)
            cam = torch.einsum("bc,bcl->bl", weights, maps)
            # Interpolating first, then normalising, makes every map span exactly [0, 1] on the grid.
            cam = nn.functional.interpolate(cam.unsqueeze(1), size=n_pixels, mode="linear", align_corners=False)
            cam = cam.squeeze(1)
            low = cam.min(dim=1, keepdim=True).values
            span = cam.max(dim=1, keepdim=True).values - low
            cam = torch.where(span > 0, (cam - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(cam))
    finally:
        model.train(was_training)
    return cam.float().cpu().numpy()


def plot_cam(
    flux: np.ndarray,
    cam: np.ndarray,
    z: float | None = None,
    wavelength: np.ndarray = WAVELENGTH,
    title: str = "",
    ax=None,
):
    """Draw one spectrum coloured by its CAM (bright = looked at, like the paper's fig. 11).

    With a redshift ``z`` the main lines are marked at their observed wavelengths (rest x (1 + z)).
    Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    flux = np.asarray(flux, dtype=np.float64)
    cam = np.asarray(cam, dtype=np.float64)
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 3.6))
    points = np.column_stack([wavelength, flux])
    segments = np.stack([points[:-1], points[1:]], axis=1)
    line = LineCollection(segments, cmap="viridis", norm=plt.Normalize(0.0, 1.0), linewidth=1.2)
    line.set_array(0.5 * (cam[:-1] + cam[1:]))
    ax.add_collection(line)
    ax.set_xlim(wavelength[0], wavelength[-1])
    ax.set_ylim(min(0.0, np.nanmin(flux, initial=0.0)) - 0.02, max(1.0, np.nanmax(flux, initial=1.0)) + 0.12)
    ax.figure.colorbar(line, ax=ax, pad=0.01, label="CAM")
    if z is not None:
        for name, rest in LINES.items():
            observed = rest * (1.0 + z)
            if wavelength[0] <= observed <= wavelength[-1]:
                ax.axvline(observed, color="tab:red", lw=0.6, ls="--", alpha=0.7)
                ax.text(observed, ax.get_ylim()[1], f" {name}", rotation=90, va="top", ha="right", fontsize=7,
                        color="tab:red")
    ax.set_xlabel("vacuum wavelength (\u00c5)")
    ax.set_ylabel("normalised flux")
    ax.set_title(title)
    return ax
