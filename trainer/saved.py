"""Saved models: load one safely, and refuse a store it does not fit.

Every model the trainer saves carries what it was trained on (a pass-through
``RunInfo`` layer): the input kind, the class (or source) names in output order,
the target and the occlusion. ``trainer evaluate`` reads them, so it needs no
``--input`` and cannot silently score a CXR model on ENH images or a 3-class
model on a 2-class store.
"""

from __future__ import annotations

import re
from pathlib import Path

from phasefeat.io.identity import describe_difference

__all__ = ["ModelError", "load_model", "model_info", "check_fit", "model_inputs", "evaluation_split",
           "model_test_split", "input_rescale", "pixels_note"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ModelError(ValueError):
    """The model cannot be loaded or does not fit the store; the message says why."""


def _one_line(exc: Exception) -> str:
    return " ".join(_ANSI.sub("", str(exc)).split())[:300]


def load_model(path):
    """Load a ``.keras`` model in safe mode, without its optimizer or loss.

    Raises
    ------
    ModelError
        A missing file, a file that is not a Keras model, or a model that safe mode
        refuses (one that could run arbitrary code, such as a ``Lambda`` layer).
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras model (.keras files are zip archives; this one is not"
                         + ("; it looks like an HDF5 store: pass it as --store" if path.read_bytes()[:8]
                            == b"\x89HDF\r\n\x1a\n" else "") + ")")
    import keras

    from .model import register_custom_objects

    register_custom_objects()
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for foreign or unsafe archives
        text = _one_line(exc)
        if "lambda" in text.lower() or "safe_mode" in text:
            layer = "a Lambda layer" if "lambda" in text.lower() else "code safe mode does not load"
            raise ModelError(f"refused: {path} contains {layer}; safe mode does not run code from "
                             "model files") from None
        raise ModelError(f"cannot load {path} as a Keras model ({text})") from None


def model_info(model) -> dict:
    """What the model was trained on: from its ``RunInfo`` layer, or inferred for older models.

    Returns
    -------
    dict
        ``input`` ("cxr"/"enh"), ``class_names`` (None when unknown), ``n_outputs``,
        ``image_size``, ``target``, and what defines its test set: ``split`` (seed, grouping,
        test sources, fractions), ``store_identity`` (None for models of earlier versions) and
        ``input_scale``, the factor its first layer multiplies stored values by (1/255 for a
        model trained on uint8 images; None without that layer).
    """
    info, scale = {}, None
    for layer in model.layers:
        if layer.name == "run_info" and hasattr(layer, "info"):
            info = dict(layer.info)
        if layer.name == "scale" and hasattr(layer, "scale"):
            scale = float(layer.scale)
    shape = model.input_shape
    channels = shape[-1]
    inferred = {1: "cxr", 3: "enh"}.get(channels)
    return {"input": info.get("input", inferred), "class_names": info.get("class_names"),
            "n_outputs": int(model.output_shape[-1]), "image_size": shape[1],
            "channels": channels, "target": info.get("target", "class"),
            "occlude": info.get("occlude", "none"), "occlude_fraction": info.get("occlude_fraction", 0.6),
            "recorded": bool(info),
            "store_params_digest": info.get("store_params_digest"),
            "split": info.get("split"), "store_identity": info.get("store_identity"),
            "input_scale": scale}


def check_fit(info: dict, store_names: list[str], requested_input: str | None,
              store_params_digest: str | None = None) -> str:
    """The input to evaluate on; refuses any mismatch between model and store.

    Parameters
    ----------
    info : dict
        From :func:`model_info`.
    store_names : list of str
        The names of the store's labels for the model's target (classes or sources).
    requested_input : str or None
        ``--input``, if given: it must agree with the model.
    store_params_digest : str, optional
        The store's feature parameters: an ENH model needs ENH made with its own.
    """
    what = info["input"]
    if what is None:
        raise ModelError(f"the model takes {info['channels']}-channel images; a store holds 1 (cxr) or 3 (enh)")
    if requested_input is not None and requested_input != what:
        raise ModelError(f"the model was trained on {what.upper()} ({info['channels']} channel(s)); "
                         f"--input {requested_input} does not fit it")
    if info["n_outputs"] != len(store_names):
        raise ModelError(f"the model predicts {info['n_outputs']} {info['target']}es; the store has "
                         f"{len(store_names)} ({', '.join(store_names)})")
    if info["class_names"] is not None and list(info["class_names"]) != list(store_names):
        raise ModelError(f"the model's {info['target']} names {info['class_names']} differ from the "
                         f"store's {store_names} (names and order must match)")
    recorded = info.get("store_params_digest")
    if what == "enh" and recorded and store_params_digest and recorded != store_params_digest:
        raise ModelError(f"the model was trained on ENH made with other feature parameters (digest "
                         f"{recorded[:12]}, the store's {store_params_digest[:12]}); convert the store with "
                         "the model's parameters")
    return what


def model_inputs(info: dict, what: str, data: dict) -> dict:
    """``derive``, ``lung_mode`` and ``rescale`` for StoreBatches: the occlusion the model was trained
    with, and the factor that puts this store's values on the scale it was trained on."""
    from .data import OccludedFeatures
    from .model import MASK_OCCLUSIONS

    occlude = info["occlude"]
    if occlude in MASK_OCCLUSIONS and not data["has_masks"].all():
        raise ModelError(f"the model was trained with --occlude {occlude}; the store lacks lung masks")
    derive = None
    if occlude != "none" and what == "enh":
        derive = OccludedFeatures(occlude, info["occlude_fraction"], data["params_json"], data["dtype"])
    return {"derive": derive, "lung_mode": occlude if occlude in MASK_OCCLUSIONS else None,
            "rescale": input_rescale(info, data["dtype"])}


def input_rescale(info: dict, dtype) -> float | None:
    """The factor that puts stored values of ``dtype`` on the scale the model was trained on (None:
    none needed). A model divides by the value range of the dtype it was trained on (255 for uint8);
    a store of the same images as float32 holds values in [0, 1], which that layer alone would shrink
    255-fold."""
    from .data import value_range

    if not info.get("input_scale"):
        return None
    factor = 1.0 / (info["input_scale"] * value_range(dtype))
    return None if abs(factor - 1.0) < 1e-6 else factor


def pixels_note(info: dict, data: dict) -> str:
    """How this store's pixels differ from those the model was trained on, and how its values are
    rescaled (empty when neither)."""
    parts = []
    recorded = info.get("store_identity")
    if isinstance(recorded, dict) and "pixels" in recorded:
        differ = describe_difference(recorded["pixels"], data["store_identity"]["pixels"])
        if differ:
            parts.append(f"the store's pixels were made otherwise than the model's training images ({differ}): "
                         "the results describe these pixels")
    factor = input_rescale(info, data["dtype"])
    if factor is not None:
        parts.append(f"its {data['dtype']} values are rescaled by {factor:g} to the scale the model was "
                     f"trained on (1.0 = {1 / info['input_scale']:g})")
    return "; ".join(parts)


def _describe(settings: dict) -> str:
    parts = [f"split seed {settings['split_seed']}", f"grouped by {settings.get('split_by', 'patient')}"]
    if settings.get("test_sources"):
        parts.append(f"test sources {', '.join(settings['test_sources'])}")
    return ", ".join(parts)


def _same_samples(recorded, store_id: dict, legacy: str | None) -> bool | None:
    """Whether a model's recorded store identity has this store's samples (what a split depends on):
    None where it records none. An earlier version's digest is matched against ``legacy``."""
    if recorded is None:
        return None
    if isinstance(recorded, str):
        return recorded == legacy
    return isinstance(recorded, dict) and recorded.get("samples") == store_id["samples"]


def evaluation_split(info: dict, store_identity: dict, split_seed=None, split_by=None, test_sources=None,
                     store_path="the store", legacy_identity: str | None = None) -> tuple[dict, str]:
    """The split to evaluate on: the model's own by default, another one only when asked.

    Returns
    -------
    settings : dict
        ``split_seed``, ``split_by``, ``test_sources`` (and the fractions when recorded).
    note : str
        Empty for the model's own test set; otherwise why these test images may not be
        unseen by the model (printed with the results).

    Raises
    ------
    ModelError
        The store is not the one the model was split on and no split was asked for: the
        model's test set cannot be rebuilt there.
    """
    asked = {k: v for k, v in (("split_seed", split_seed), ("split_by", split_by),
                               ("test_sources", None if test_sources is None else list(test_sources)))
             if v is not None}
    recorded = info.get("split")
    if recorded is None:  # a model of an earlier version
        settings = {"split_seed": 0, "split_by": "patient", "test_sources": [], **asked}
        return settings, (f"the model does not record its split (an earlier version): this is the test part of "
                          f"{_describe(settings)}; make sure it is the split the model was trained with")
    settings = {**recorded, **asked}
    if _same_samples(info.get("store_identity"), store_identity, legacy_identity) is False:
        if not asked:
            differ = describe_difference(info["store_identity"].get("samples"), store_identity["samples"]) \
                if isinstance(info["store_identity"], dict) else "the model records an earlier version's identity"
            raise ModelError(f"{store_path} does not hold the samples this model was split on ({differ}), so "
                             "its test set cannot be rebuilt here; pass --split-seed (and --split-by, "
                             "--test-source) to evaluate on a split of this store")
        return settings, (f"{store_path} is not the store the model was split on: the test part of "
                          f"{_describe(settings)} may hold images the model was trained on")
    if isinstance(info.get("store_identity"), str) and not asked:
        return settings, ("the model records an earlier version's store identity, which left out patient ids "
                          "and sources: this is the test part of its split if the store groups samples as "
                          "when it was trained")
    other = sorted(k for k, v in asked.items() if v != recorded.get(k))
    if other:
        return settings, (f"not the model's own test set ({', '.join(other).replace('_', ' ')} differ from the "
                          f"model's {_describe(recorded)}): these test images may include ones it was trained on")
    return settings, ""


def model_test_split(store_path, info: dict, data: dict, what: str, split_seed=None, split_by=None,
                     test_sources=None):
    """The split whose test part a model is evaluated (or explained) on: ``(split, settings, note)``.

    See :func:`evaluation_split`; ``data`` is :func:`trainer.experiment.store_info` of the store.
    """
    from .experiment import RunConfig, prepare_split

    legacy = None
    if isinstance(info.get("store_identity"), str):  # a model of an earlier version: its digest
        from phasefeat.io.identity import legacy_identity
        from phasefeat.io.store import open_store

        with open_store(store_path) as store:
            legacy = legacy_identity(store)
    settings, note = evaluation_split(info, data["store_identity"], split_seed, split_by, test_sources,
                                      store_path=store_path, legacy_identity=legacy)
    cfg = RunConfig(input=what, target=info["target"], split_seed=settings["split_seed"],
                    split_by=settings["split_by"], test_sources=tuple(settings["test_sources"]),
                    **{k: settings[k] for k in ("test_fraction", "val_fraction") if k in settings})
    return prepare_split(store_path, cfg, data), settings, note
