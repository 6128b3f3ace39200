"""The 1-D DenseNet of Wang, Zhao & Fan (section 3 of the paper) and everything around it.

Knows nothing of Dask or file formats: it takes normalised spectra (batch, 2600) float32 in [0, 1]
and labels 0=STAR, 1=GALAXY, 2=QSO. Modules, in the order a model's life goes:
``blocks``/``densenet``/``baselines`` (architecture, presets, ``build_model``), ``augment``
(noises, 1:1:1 balancing), ``train`` (``fit``), ``calibration`` (temperature, priors, ECE),
``weights`` (safetensors + model card), ``inference`` (``Classifier``), ``evaluate`` (Tables 1-2),
``cam`` (class activation maps), ``ensemble`` (several networks' mean logits).
"""
