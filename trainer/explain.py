"""``trainer explain``: where does a model look? Grad-CAM maps, and the share inside the central box.

For each saved model, the test images of every class it gets right and wrong get a heat map
of what drove the predicted class: Grad-CAM (Selvaraju et al., ICCV 2017) on the last
convolutional feature map when Keras runs on TensorFlow, otherwise occlusion sensitivity
(Zeiler and Fergus, ECCV 2014: the drop of the class probability when a patch is blacked
out; forward passes only, so any backend can compute it). The figure names the method. The
number per model is the share of the map's mass inside the central box that the audit
blacks out: a model that reads the source puts its mass on the borders and corners.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from phasefeat.io._atomic import make_dirs

__all__ = ["explain", "grad_cam", "occlusion_sensitivity", "box_share", "METHODS"]

METHODS = ("grad-cam", "occlusion")


def _feature_model(model):
    import keras

    head = model.get_layer("head_pool")
    return keras.Model(model.inputs, [head.input, model.output])


def grad_cam(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM maps, ``(n, H, W)`` in [0, 1], for ``classes`` (TensorFlow backend).

    Weights are the spatial means of the class score's gradient with respect to the last
    convolutional feature map; the map is their weighted sum, rectified, upsampled to the
    input size and scaled to a maximum of 1 (0 where it is 0 everywhere).
    """
    import tensorflow as tf

    features = _feature_model(model)
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        maps, probs = features(x, training=False)
        tape.watch(maps)
        score = tf.gather(probs, classes, axis=1, batch_dims=1)
    grads = tape.gradient(score, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))[..., None]
    cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def occlusion_sensitivity(model, images: np.ndarray, classes: np.ndarray, grid: int = 8) -> np.ndarray:
    """Occlusion-sensitivity maps, ``(n, H, W)`` in [0, 1]: how much the class probability drops
    when each cell of a ``grid x grid`` partition is blacked out (negative drops count as 0)."""
    n, h, w = images.shape[:3]
    base = model.predict(images, verbose=0)[np.arange(n), classes]
    out = np.zeros((n, h, w), dtype=np.float32)
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    for i in range(grid):
        for j in range(grid):
            covered = images.copy()
            covered[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0
            drop = base - model.predict(covered, verbose=0)[np.arange(n), classes]
            out[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = np.maximum(drop, 0)[:, None, None]
    peak = out.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, out / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def box_share(maps: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """Share of each map's mass inside the central ``fraction`` x ``fraction`` box (NaN for an empty map)."""
    from .model import occlusion_mask

    h, w = maps.shape[1:3]
    inside = occlusion_mask(h, w, "outside", fraction)[..., 0].astype(bool)
    total = maps.sum(axis=(1, 2))
    return np.where(total > 0, maps[:, inside].sum(axis=1) / np.where(total > 0, total, 1), np.nan)


def _choose(labels, predicted, per_kind: int, seed: int) -> list[tuple[int, str]]:
    """Up to ``per_kind`` right and wrong test images of every class: (position, "right"/"wrong")."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in sorted(set(labels.tolist())):
        for kind, mask in (("right", (labels == c) & (predicted == c)), ("wrong", (labels == c) & (predicted != c))):
            where = np.flatnonzero(mask)
            for k in sorted(rng.permutation(where)[:per_kind].tolist()):
                chosen.append((k, kind))
    return chosen


def _mean(shares) -> float:
    """Mean of the defined shares; NaN when no map had any mass (a model whose gradients all vanished)."""
    shares = np.asarray(shares, dtype=np.float64)
    return float(shares[np.isfinite(shares)].mean()) if np.isfinite(shares).any() else float("nan")


def explain(model_paths, store_path, out, *, per_kind: int = 2, split_seed: int | None = None, fraction: float = 0.6,
            method: str | None = None, seed: int = 0) -> dict:
    """Heat maps of each model on the test split; writes ``explain.png`` and ``explain.json`` in ``out``."""
    import keras

    from .data import StoreBatches
    from .experiment import store_info
    from .saved import check_fit, load_model, model_info, model_inputs, model_test_split

    method = method or ("grad-cam" if keras.backend.backend() == "tensorflow" else "occlusion")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "grad-cam" and keras.backend.backend() != "tensorflow":
        raise ValueError("Grad-CAM here needs the TensorFlow backend; use --method occlusion")
    results, panels = [], []
    for path in model_paths:
        model = load_model(path)
        info = model_info(model)
        data = store_info(store_path, info["input"] or "enh", info["target"])
        what = check_fit(info, data["class_names"], None, data["params_digest"])
        split, _, _ = model_test_split(store_path, info, data, what, split_seed)  # the model's own by default
        test = StoreBatches(store_path, split.test, what, data["labels"], len(data["class_names"]), "int",
                            64, image_size=model.input_shape[1], **model_inputs(info, what, data))
        images = np.concatenate([test[i][0] for i in range(len(test))])
        test.close()
        labels = data["labels"][split.test]
        predicted = model.predict(images, verbose=0).argmax(axis=1)
        chosen = _choose(labels, predicted, per_kind, seed)
        picked = np.array([k for k, _ in chosen], dtype=np.int64)
        classes = predicted[picked]
        x = images[picked]
        maps = grad_cam(model, x.astype("float32"), classes) if method == "grad-cam" else \
            occlusion_sensitivity(model, x, classes)
        shares = box_share(maps, fraction)
        lungs = None
        if data["has_masks"].all() and maps.shape[1:] == tuple(model.input_shape[1:3]):
            from phasefeat.io.store import open_store

            with open_store(store_path) as store:
                masks = store.read_many(split.test[picked], "mask")[..., 0].astype(bool)
            if masks.shape == maps.shape:
                total = maps.sum(axis=(1, 2))
                lungs = np.where(total > 0, (maps * masks).sum(axis=(1, 2)) / np.where(total > 0, total, 1),
                                 np.nan)
        results.append({"model": str(path), "input": what, "method": method, "images": len(picked),
                         "box_fraction": fraction, "mass_in_box_mean": _mean(shares),
                         "mass_in_box": shares.tolist(),
                         "mass_in_lungs_mean": None if lungs is None else _mean(lungs),
                         "samples": [{"test_position": int(k), "kind": kind,
                                      "true": data["class_names"][labels[k]],
                                      "predicted": data["class_names"][predicted[k]]}
                                     for k, kind in chosen]})
        panels.append((Path(path).parent.name or Path(path).name, what, x, maps, results[-1]["samples"]))
    out = Path(out)
    make_dirs(out)
    figure = _figure(panels, method, fraction, out / "explain.png")
    record = {"store": str(store_path), "method": method, "models": results, "figure": figure}
    (out / "explain.json").write_text(json.dumps(record, indent=1))
    return record


def _figure(panels, method, fraction, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phasefeat.tools.figures import atomic_savefig

    rows = max(len(p[2]) for p in panels)
    fig, axes = plt.subplots(rows, len(panels), figsize=(3.2 * len(panels), 3.0 * rows), squeeze=False)
    name = "Grad-CAM" if method == "grad-cam" else "occlusion sensitivity (Grad-CAM fallback)"
    for col, (label, what, images, maps, samples) in enumerate(panels):
        for row in range(rows):
            ax = axes[row, col]
            ax.axis("off")
            if row >= len(images):
                continue
            image = images[row].astype(np.float32)
            image = image[..., 0] if image.shape[-1] == 1 else image / max(float(image.max()), 1.0)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.imshow(maps[row], cmap="jet", alpha=0.4, vmin=0, vmax=1)
            h, w = maps[row].shape
            bh, bw = fraction * h, fraction * w
            ax.add_patch(matplotlib.patches.Rectangle(((w - bw) / 2, (h - bh) / 2), bw, bh, fill=False,
                                                      edgecolor="white", linestyle="--", linewidth=0.8))
            s = samples[row]
            ax.set_title(f"{label} ({what.upper()})\ntrue {s['true']}, predicted {s['predicted']} ({s['kind']})",
                         fontsize=7)
    fig.suptitle(f"{name}; dashed: the central box the audit blacks out", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
    return Path(path).name
