"""Trained weights on disk: ``<name>.safetensors`` (tensors only, never pickled code) plus a model
card ``<name>.json`` that says what the tensors are and how they were made.

Loading checks, before any tensor reaches a model: the sha256 of the weights file against the card
(``WeightsIntegrityError``), then the card against this code (``ModelCardMismatch``): class names,
wavelength grid, normalisation, and the preset's full config against what ``build_model`` builds
today. Each error names every field that does not match.

An ensemble (``ensemble.LogitMean``) is one file too: its members' tensors under ``members.<i>.``, and
``members`` on its card (absent: one network); every member is the card's preset and config, unless the
card has ``member_overrides``, one ``build_model`` overrides dict per member (members trained by two
recipes, e.g. with and without the wavelength channel); ``config`` is then the first member's.

Shipped weights live in this package's ``weights/`` directory; the name ``default`` (or None) means
``weights/default.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lamost_classify import __version__
from lamost_classify.contract import CLASS_NAMES, FILL_VALUE, N_PIXELS, WAVE_MAX, WAVE_MIN

from .densenet import PRESETS, build_model, config_dict
from .ensemble import LogitMean

CARD_VERSION = 1
DEFAULT_NAME = "default"
FLAT_PRIOR: tuple[float, ...] = tuple(1.0 / len(CLASS_NAMES) for _ in CLASS_NAMES)


class WeightsIntegrityError(Exception):
    """The weights file is missing, unreadable, or not the file its card describes."""


class ModelCardMismatch(Exception):
    """The card describes a model this code would not build or feed the same way.

    ``mismatches`` maps each offending field to (value in the card, value in the code).
    """

    def __init__(self, path: Path, mismatches: dict[str, tuple[object, object]]) -> None:
        self.path = path
        self.mismatches = mismatches
        details = "; ".join(f"{k}: card has {a!r}, code has {b!r}" for k, (a, b) in mismatches.items())
        super().__init__(f"model card {path} does not match this code ({details})")


def grid_card() -> dict:
    return {"n_pixels": N_PIXELS, "wave_min": WAVE_MIN, "wave_max": WAVE_MAX, "spacing": "log10",
            "wavelengths": "vacuum"}


def normalisation_card() -> dict:
    return {"method": "min-max over valid pixels, (F - Fmin) / (Fmax - Fmin)", "range": [0.0, 1.0],
            "masked_pixels": "the line between the nearest valid pixels (contract.fill_masked)",
            "empty_value": FILL_VALUE}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights_dir() -> Path:
    return Path(str(resources.files("lamost_classify.model") / "weights"))


def resolve_weights(model: str | Path | None = None) -> Path:
    """The ``.safetensors`` path of a shipped name (None/'default'/'fast-v2'), a file, or its card."""
    if model is None:
        model = DEFAULT_NAME
    text = str(model)
    if os.sep not in text and "/" not in text and not text.endswith((".safetensors", ".json")):
        packaged = packaged_weights_dir() / f"{text}.safetensors"
        if packaged.exists() or not Path(text).exists():
            if not packaged.exists():
                shipped = sorted(p.stem for p in packaged_weights_dir().glob("*.safetensors"))
                raise FileNotFoundError(
                    f"no shipped weights named {text!r} in {packaged_weights_dir()} (shipped: {shipped or 'none'}); "
                    "train some with `lamost-classify train` and pass the .safetensors path"
                )
            return packaged
    path = Path(text)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    elif path.suffix != ".safetensors" and not path.exists():
        path = path.with_name(path.name + ".safetensors")
    return path


def card_path(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    name: str | None = None,
    overrides: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    temperature: float = 1.0,
    train_prior: tuple[float, ...] = FLAT_PRIOR,
) -> Path:
    """Write ``path`` (.safetensors) and its card (.json beside it); returns the weights path.

    ``overrides`` are the keyword arguments given to ``build_model`` on top of ``model.preset``;
    ``training`` summarises the training data (counts, sha256 of the input, settings). A ``LogitMean``
    is saved whole, its card saying how many members it has.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    # One metadata key: safetensors writes them in hash-map order, so two would make the same network's
    # sha256 (its identity) differ between saves. The preset is on the card.
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    card = {
        "card_version": CARD_VERSION,
        "name": name or f"{model.preset}-{path.stem}",
        "preset": model.preset,
        "overrides": {**_differs_from_preset(model), **(overrides or {})},
        "config": config_dict(model),
        "class_names": list(CLASS_NAMES),
        "grid": grid_card(),
        "normalisation": normalisation_card(),
        "training": training or {},
        "metrics": metrics or {},
        "temperature": float(temperature),
        "train_prior": [float(p) for p in train_prior],
        **({"members": len(model.members)} if isinstance(model, LogitMean) else {}),
        **({"member_overrides": [_differs_from_preset(m) for m in model.members]}
           if isinstance(model, LogitMean) and any(config_dict(m) != config_dict(model) for m in model.members)
           else {}),
        "weights_file": path.name,
        "weights_sha256": file_sha256(path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": __version__,
    }
    write_card(path, card)
    return path


def write_card(weights_path: Path, card: dict) -> None:
    """Write ``card`` beside ``weights_path`` (its .json), whole or not at all."""
    target = card_path(weights_path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=float))
    os.replace(tmp, target)


def _differs_from_preset(model: nn.Module) -> dict:
    """The config fields where ``model`` is not its preset (e.g. a redshift head added in training),
    so that the card rebuilds this network even when the caller names no overrides."""
    preset = config_dict(build_model(model.preset))
    return {k: v for k, v in config_dict(model).items() if preset.get(k) != v}


def read_card(weights_path: Path) -> dict:
    path = card_path(weights_path)
    if not path.exists():
        raise WeightsIntegrityError(f"model card {path} is missing: weights without a card are not loaded")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsIntegrityError(f"model card {path} is not valid JSON: {exc}") from exc


def check_card(card: dict, path: Path) -> nn.Module:
    """Compare the card with this code; return the (untrained) model it describes (a ``LogitMean`` of
    ``members`` networks when the card has more than one)."""
    mismatches: dict[str, tuple[object, object]] = {}
    if card.get("card_version") != CARD_VERSION:
        mismatches["card_version"] = (card.get("card_version"), CARD_VERSION)
    if card.get("class_names") != list(CLASS_NAMES):
        mismatches["class_names"] = (card.get("class_names"), list(CLASS_NAMES))
    for key, expected in (("grid", grid_card()), ("normalisation", normalisation_card())):
        got = card.get(key) or {}
        for field in sorted(set(got) | set(expected)):
            if got.get(field) != expected.get(field):
                mismatches[f"{key}.{field}"] = (got.get(field), expected.get(field))
    preset = card.get("preset")
    if preset not in PRESETS:
        mismatches["preset"] = (preset, sorted(PRESETS))
        raise ModelCardMismatch(card_path(path), mismatches)
    try:
        model = build_model(preset, **card.get("overrides", {}))
    except (TypeError, ValueError) as exc:
        mismatches["overrides"] = (card.get("overrides"), str(exc))
        raise ModelCardMismatch(card_path(path), mismatches) from exc
    code_config = config_dict(model)
    card_config = card.get("config") or {}
    # A field the card predates (the redshift head's width) had its default then: that is no mismatch.
    defaults = config_dict(build_model(preset))
    card_config = {**{k: defaults[k] for k in set(code_config) - set(card_config) if k in defaults}, **card_config}
    for field in sorted(set(code_config) | set(card_config)):
        if card_config.get(field) != code_config.get(field):
            mismatches[f"config.{field}"] = (card_config.get(field), code_config.get(field))
    members = card.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        mismatches["members"] = (members, "a whole number >= 1")
        raise ModelCardMismatch(card_path(path), mismatches)
    member_overrides = card.get("member_overrides", [card.get("overrides", {})] * members)
    if not (isinstance(member_overrides, list) and len(member_overrides) == members
            and all(isinstance(o, dict) for o in member_overrides)):
        mismatches["member_overrides"] = (member_overrides, f"{members} dicts of build_model overrides")
    if mismatches:
        raise ModelCardMismatch(card_path(path), mismatches)
    if members == 1:
        return model
    try:
        return LogitMean([model] + [build_model(preset, **o) for o in member_overrides[1:]])
    except (TypeError, ValueError) as exc:
        raise ModelCardMismatch(card_path(path), {"member_overrides": (member_overrides, str(exc))}) from exc


def load_weights(model: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, its card) for a shipped name, a weights file, or its card."""
    path = resolve_weights(model)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} not found")
    card = read_card(path)
    actual = file_sha256(path)
    if actual != card.get("weights_sha256"):
        raise WeightsIntegrityError(
            f"{path}: sha256 {actual[:16]}... does not match its card's weights_sha256 "
            f"{str(card.get('weights_sha256'))[:16]}...: the file was changed, truncated or swapped"
        )
    net = check_card(card, path)
    try:
        state = load_file(path)
    except Exception as exc:  # safetensors raises its own error types on damaged headers
        raise WeightsIntegrityError(f"{path} is not a readable safetensors file: {exc}") from exc
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shapes = {k: (tuple(state[k].shape), tuple(expected[k].shape))
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape}
    if missing or unexpected or wrong_shapes:
        raise ModelCardMismatch(card_path(path), {
            **({"tensors.missing": (None, missing)} if missing else {}),
            **({"tensors.unexpected": (unexpected, None)} if unexpected else {}),
            **{f"tensors.{k}.shape": v for k, v in sorted(wrong_shapes.items())},
        })
    net.load_state_dict(state)
    return net.to(device).eval(), card
