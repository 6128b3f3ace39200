"""A figure like the paper's fig. 8: mock spectra of each class next to real LAMOST spectra of similar S/N.

Rows: STAR, GALAXY, QSO mocks. Columns: mocks of the row's class, then the real LAMOST spectrum (all real
files at hand are stars) whose g-band S/N is closest to the first mock's. Every panel shows what the
network sees: the pipeline's 2600-pixel grid after min-max normalisation (masked pixels at 0), which is
why this module sits above both ``mocks`` and ``pipeline``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import CLASS_NAMES, NATIVE_WAVELENGTH, WAVELENGTH
from .mocks.instrument import _read_real, default_lamost_dir, is_held_out, real_files
from .mocks.simulate import MockChunk, Simulator, simulate
from .pipeline.grid import prepare_arrays


def _pick_mocks(sim: Simulator, seed: int, per_class: int) -> dict[str, MockChunk]:
    sim.class_mix = np.array([1 / 3, 1 / 3, 1 / 3])
    return _by_class(MockChunk.concat(list(simulate(60, seed, simulator=sim, chunk_size=60))), per_class)


def _by_class(chunk: MockChunk, per_class: int) -> dict[str, MockChunk]:
    out = {}
    for cls in CLASS_NAMES:
        rows = np.flatnonzero(chunk.truth["class"] == cls)[:per_class]
        out[cls] = MockChunk.concat([chunk.slice(int(i), int(i) + 1) for i in rows])
    return out


def family_figure(family: str, path: str | Path, seed: int = 0, per_class: int = 3,
                  lamost_dir: str | Path | None = None) -> Path:
    """The figure for mock family ``family`` (mocks/families.py), from 60 balanced mocks of it."""
    from .mocks.families import generate

    chunk = MockChunk.concat(list(generate(family, 60, seed, class_mix=(1 / 3, 1 / 3, 1 / 3), chunk_size=60)))
    return mock_vs_real_figure(path, seed, per_class, lamost_dir=lamost_dir, mocks=_by_class(chunk, per_class),
                               label=f"family {family}")


def mock_vs_real_figure(path: str | Path, seed: int = 0, per_class: int = 3, simulator: Simulator | None = None,
                        lamost_dir: str | Path | None = None, mocks: dict[str, MockChunk] | None = None,
                        label: str = "") -> Path:
    """Draw the figure into ``path`` (PNG). Real spectra come from non-held-out files, when present.
    ``mocks`` (class -> mocks) replaces the simulator's; ``label`` names them in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if mocks is None:
        sim = simulator or Simulator(class_mix=(1, 1, 1))
        saved_mix = sim.class_mix
        mocks = _pick_mocks(sim, seed, per_class)
        sim.class_mix = saved_mix
    root = Path(lamost_dir) if lamost_dir else default_lamost_dir()
    real = []
    if root is not None:
        for p in real_files(root)[::7]:
            if is_held_out(p):
                continue
            r = _read_real(p)
            if r is not None and np.isfinite(r["snr"][1]):
                real.append((float(r["snr"][1]), p.name, r))
    ncols = per_class + (1 if real else 0)
    fig, axes = plt.subplots(3, ncols, figsize=(4.2 * ncols, 7.5), sharex=True, squeeze=False)
    for row, cls in enumerate(CLASS_NAMES):
        m = mocks[cls]
        prep = prepare_arrays(NATIVE_WAVELENGTH, m.flux, m.ivar, m.andmask).flux
        for col in range(per_class):
            ax = axes[row, col]
            if col < len(m):
                t = m.truth
                ax.plot(WAVELENGTH, prep[col], lw=0.4, color="C0")
                ax.set_title(f"mock {cls} {t['subclass'][col]} z={t['z'][col]:.3f}\nS/N g={t['snr_g'][col]:.0f}  "
                             f"{str(t['template'][col])[:28]}", fontsize=7)
        if real:
            target = float(m.truth["snr_g"][0])
            snr, name, r = min(real, key=lambda x: abs(np.log(max(x[0], 0.1) / max(target, 0.1))))
            prep_r = prepare_arrays(NATIVE_WAVELENGTH, r["flux"][None], r["ivar"][None], r["andmask"][None]).flux[0]
            ax = axes[row, per_class]
            ax.plot(WAVELENGTH, prep_r, lw=0.4, color="C3")
            ax.set_title(f"real LAMOST (a star), S/N g={snr:.0f}\n{name[:34]}", fontsize=7)
    for ax in axes.ravel():
        ax.set_ylim(-0.02, 1.05)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("vacuum wavelength (A)", fontsize=7)
    fig.suptitle((f"{label}: " if label else "") + "Mock spectra (blue) and real LAMOST spectra of similar S/N (red), as the network sees them", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
