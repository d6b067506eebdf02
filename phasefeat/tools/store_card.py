"""``phasefeat inspect STORE --html card.html``: look at a store before training on it.

One self-contained page (figures embedded, no network, no script): what the store holds, what its images
look like, and what could give a class away before any lung is seen (DeGrave et al., Nat. Mach. Intell.
2021: one class from one archive, burnt-in markers, other borders, sizes and bit depths per source). The
store is read once, in chunks, so memory stays flat whatever its size. ``docs/store-card.md`` says how to
read it and what it cannot show.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

import numpy as np

from ..io._atomic import atomic_path
from ..io.identity import store_identity
from ..io.inspect_store import class_source_table, cramers_v, duplicate_groups

__all__ = ["write_card", "card_summary", "scan_store", "bit_depth", "ks_distance", "most_different",
           "SECTIONS"]

#: The card's sections, in order (a test checks each is there).
SECTIONS = ("What the store is", "Class x source", "Conversion and identity", "Failures and duplicates",
            "What the images look like", "CXR and its ENH channels", "What could give a class away",
            "What this card cannot show")
#: Side of the mean images (the average of every image, per class and per source).
MEAN_SIDE = 128
#: Samples read at a time: bounds the card's memory whatever the store's size.
CHUNK = 256
NUMERIC = ("original size (longer side, px)", "aspect ratio (width / height)", "bit depth",
           "mean grey level (CXR, 0-1)")
STYLE = """body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em}
th{background:#eef}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}
.note{background:#fff6dd;padding:.5em 1em;border-left:4px solid #e0b000}"""


def bit_depth(mode: str) -> int:
    """The bits per sample of an original image from its recorded mode (``"I;16"``, ``"DICOM ... 12-bit"``)."""
    mode = mode.split(" (")[0]
    if mode.startswith("DICOM") and mode.endswith("-bit"):
        return int(mode.rsplit(" ", 1)[1][:-4])
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 1 if mode == "1" else 8


def ks_distance(a, b) -> float:
    """The two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical CDFs (0-1)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if not len(a) or not len(b):
        return float("nan")
    values = np.concatenate([a, b])
    gap = np.searchsorted(a, values, side="right") / len(a) - np.searchsorted(b, values, side="right") / len(b)
    return float(np.abs(gap).max())


def most_different(values, groups: dict[str, np.ndarray]) -> tuple[str, str, float] | None:
    """The pair of groups (each an index array) whose ``values`` differ most (KS distance), or None."""
    best = None
    names = [n for n in groups if len(groups[n])]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = ks_distance(values[groups[a]], values[groups[b]])
            if best is None or d > best[2]:
                best = (a, b, d)
    return best


def scan_store(store, groups: dict[str, np.ndarray], chunk: int = CHUNK) -> tuple[np.ndarray, dict]:
    """One pass over ``/cxr`` in chunks: each sample's mean grey level (0-1) and the mean image of each
    group (``MEAN_SIDE`` squared, nearest samples of each image)."""
    n, h, w, _ = store.shape("cxr")
    scale = float(np.iinfo(store.dtype("cxr")).max)
    rows = np.linspace(0, h - 1, MEAN_SIDE).round().astype(np.intp)
    cols = np.linspace(0, w - 1, MEAN_SIDE).round().astype(np.intp)
    member = {name: np.zeros(n, bool) for name in groups}
    for name, idx in groups.items():
        member[name][idx] = True
    sums = {name: np.zeros((MEAN_SIDE, MEAN_SIDE)) for name in groups}
    grey = np.empty(n, np.float32)
    for start in range(0, n, chunk):
        x = store.read_many(range(start, min(start + chunk, n)), "cxr")[..., 0]
        grey[start:start + len(x)] = x.reshape(len(x), -1).mean(axis=1) / scale
        small = x[:, rows][:, :, cols].astype(np.float64) / scale
        for name in groups:
            chosen = member[name][start:start + len(x)]
            if chosen.any():
                sums[name] += small[chosen].sum(axis=0)
    means = {name: sums[name] / max(len(groups[name]), 1) for name in groups}
    return grey, means


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    from .figures import _pyplot

    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _grid_figure(images: dict[str, np.ndarray], title: str, columns: int) -> str:
    """Rows of images, one row per name (its label on the left)."""
    from .figures import _pyplot

    plt = _pyplot()
    rows = len(images)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns + 1.2, 1.7 * rows + 0.6), squeeze=False)
    for r, (name, stack) in enumerate(images.items()):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(stack):
                ax.imshow(stack[c], cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _property_figure(name: str, values: np.ndarray, groups: dict[str, np.ndarray], kind: str) -> str:
    from .figures import _pyplot

    plt = _pyplot()
    names = [g for g in groups if len(groups[g])]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.6))
    import matplotlib

    # Matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecates the old name).
    horizontal = ({"orientation": "horizontal"} if tuple(int(p) for p in matplotlib.__version__.split(".")[:2])
                  >= (3, 10) else {"vert": False})
    ax.boxplot([values[groups[g]] for g in names], showfliers=True, widths=0.6, **horizontal)
    ax.set_yticks(range(1, len(names) + 1), [f"{g} ({len(groups[g])})" for g in names])
    ax.set_xlabel(name)
    ax.set_ylabel(kind)
    ax.set_title(f"{name} per {kind} (box: quartiles; whiskers: 1.5 IQR; points: beyond)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _table(head: list[str], rows: list[list]) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</tbody></table>"])


def _reading_of(v: float) -> str:
    if v != v:
        return "not defined: one class or one source"
    if v < 0.1:
        return "class and source are nearly independent"
    if v < 0.3:
        return "a weak association: some classes come more from some sources"
    if v < 0.5:
        return "a moderate association: a model can partly tell the class from the source"
    return ("a strong association: the source nearly gives the class away, so a model can learn the hospital "
            "instead of the disease (trainer audit measures whether it does)")


def _choose(groups: dict[str, np.ndarray], per_group: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {g: np.sort(rng.choice(idx, size=min(per_group, len(idx)), replace=False)) for g, idx in groups.items()
            if len(idx)}


def write_card(store, path, *, seed: int = 0, per_group: int = 8, panel_samples: int = 3,
               failures_shown: int = 50) -> Path:
    """Write the store card of an open store to ``path`` (atomically); returns the path.

    Parameters
    ----------
    seed : int
        Chooses the thumbnails and the CXR/ENH samples.
    per_group : int
        Thumbnails per class (and per source).
    panel_samples : int
        Samples shown as CXR beside their three ENH channels.
    """
    labels, names = np.asarray(store.labels), list(store.class_names)
    sources = list(store.sources)
    by_class = {name: np.flatnonzero(labels == k) for k, name in enumerate(names)}
    has_sources = any(sources)
    source_names = sorted(set(sources) - {""})
    by_source = {s: np.flatnonzero(np.asarray(sources, dtype=object) == s) for s in source_names}
    grey, means = scan_store(store, {**{f"class {k}": v for k, v in by_class.items()},
                                     **{f"source {k}": v for k, v in by_source.items()}})
    width = np.asarray(store.meta("orig_width"), dtype=np.float64)
    height = np.asarray(store.meta("orig_height"), dtype=np.float64)
    modes = [m.split(" (")[0] for m in store.orig_modes]
    values = {NUMERIC[0]: np.maximum(width, height), NUMERIC[1]: width / np.maximum(height, 1),
              NUMERIC[2]: np.array([bit_depth(m) for m in modes], dtype=np.float64), NUMERIC[3]: grey}
    parts = [_identity_section(store, labels, names, sources, by_class, by_source, has_sources),
             _failures_section(store, names, failures_shown),
             _images_section(store, by_class, by_source, means, seed, per_group),
             _panel_section(store, labels, names, seed, panel_samples),
             _properties_section(values, modes, by_class, by_source, has_sources),
             _limits_section(has_sources)]
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Store card: "
            f"{html.escape(store.path.name)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>Store card: {html.escape(store.path.name)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path


def _identity_section(store, labels, names, sources, by_class, by_source, has_sources) -> str:
    patients = store.patient_ids
    rows = [[n, len(by_class[n]), len({patients[i] for i in by_class[n] if patients[i]}) or "none recorded"]
            for n in names]
    out = ["<h2>What the store is</h2>",
           f"<p>{len(labels)} samples in {len(names)} classes; CXR {store.shape('cxr')[1]}x{store.shape('cxr')[2]} "
           f"{np.dtype(store.dtype('cxr')).name}, ENH {np.dtype(store.dtype('enh')).name}.</p>",
           _table(["class", "images", "patients"], rows), "<h2>Class x source</h2>"]
    if has_sources:
        table, source_names = class_source_table(labels, sources, len(names))
        v = cramers_v(table)
        out += [_table(["class", *source_names, "total"],
                       [[n, *table[c].tolist(), int(table[c].sum())] for c, n in enumerate(names)]),
                f"<p><strong>Cramér's V {v:.2f}</strong> (0: class and source independent; 1: the source "
                f"decides the class): {_reading_of(v)}.</p>"]
    else:
        out.append('<p class="note">No sources are recorded in this store, so the card cannot show which '
                   "hospital or archive each class comes from, nor compare sources. Convert with "
                   "<code>--source-pattern</code> (or a label file's source column) to record them.</p>")
    attrs = store.provenance
    settings = [[k, attrs.get(k)] for k in ("preset", "features_at", "size", "fit", "cxr_dtype", "enh_dtype",
                                              "source_pattern", "patient_pattern", "created", "phasefeat_version",
                                              "command_line") if attrs.get(k) not in (None, "")]
    identity = store_identity(store)
    out += ["<h2>Conversion and identity</h2>", _table(["setting", "value"], settings),
            "<p>The identity the trainer compares (a store converted otherwise, or with other samples, "
            "differs here):</p>",
            _table(["part", "field", "value"], [[part, k, v] for part, fields in identity.items()
                                                for k, v in fields.items()])]
    return "\n".join(out)


def _failures_section(store, names, shown: int) -> str:
    failures = store.failures
    out = ["<h2>Failures and duplicates</h2>", f"<p>{len(failures)} file(s) could not be used.</p>"]
    if failures:
        out.append(_table(["file", "reason"], [list(f) for f in failures[:shown]]))
        if len(failures) > shown:
            out.append(f"<p>... and {len(failures) - shown} more (<code>phasefeat inspect --all-failures</code>).</p>")
    groups = duplicate_groups(store.sha256)
    paths, labels = store.source_paths, store.labels
    out.append(f"<p>{len(groups)} group(s) of identical files.</p>")
    if groups:
        out.append(_table(["group", "files (class)"], [[k + 1, " = ".join(f"{paths[i]} ({names[labels[i]]})"
                                                                          for i in g)]
                                                        for k, g in enumerate(groups[:shown])]))
    return "\n".join(out)


def _thumbs(store, chosen: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    scale = float(np.iinfo(store.dtype("cxr")).max)
    return {name: store.read_many(idx, "cxr")[..., 0] / scale for name, idx in chosen.items()}


def _images_section(store, by_class, by_source, means, seed, per_group) -> str:
    out = ["<h2>What the images look like</h2>",
           f"<p>{per_group} images per class, chosen at random (seed {seed}).</p>",
           _img(_grid_figure(_thumbs(store, _choose(by_class, per_group, seed)), "Images per class", per_group),
                "thumbnails per class")]
    if by_source:
        out += [f"<p>{per_group} images per source.</p>",
                _img(_grid_figure(_thumbs(store, _choose(by_source, per_group, seed)), "Images per source",
                                  per_group), "thumbnails per source")]
    out += ["<p>The mean image of each class and source: the average of all its images. Borders, markers, "
            "text and collimation that a group shares show up here, where no single image shows them.</p>"]
    from .figures import _pyplot

    plt = _pyplot()
    for kind in ("class", "source"):
        items = [(key.split(" ", 1)[1], image) for key, image in means.items() if key.startswith(f"{kind} ")]
        if not items:
            continue
        fig, axes = plt.subplots(1, len(items), figsize=(2.2 * len(items) + 0.4, 2.6), squeeze=False)
        for ax, (name, image) in zip(axes[0], items, strict=True):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(name, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"Mean image per {kind}", fontsize=11)
        fig.tight_layout()
        out.append(_img(_png(fig), f"mean image per {kind}"))
    return "\n".join(out)


def _panel_section(store, labels, names, seed, samples) -> str:
    order = [c.lower() for c in store.params.channel_order]
    shown = ("lwpa", "lpe", "elea")  # the study's order
    titles = {"lwpa": "LwPA", "lpe": "LPE", "elea": "ELEA"}
    rng = np.random.default_rng(seed + 1)
    picked = [int(rng.choice(np.flatnonzero(labels == k))) for k in range(len(names)) if (labels == k).any()]
    picked = picked[:samples]
    enh_scale = float(np.iinfo(store.dtype("enh")).max) if np.dtype(store.dtype("enh")).kind == "u" else 1.0
    cxr_scale = float(np.iinfo(store.dtype("cxr")).max)
    from .figures import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(len(picked), 4, figsize=(8.8, 2.3 * len(picked) + 0.5), squeeze=False)
    for r, i in enumerate(picked):
        cxr = store.read(i, "cxr")[..., 0] / cxr_scale
        enh = store.read(i, "enh").astype(np.float64) / enh_scale
        panels = [("CXR", cxr)] + [(titles[c], enh[..., order.index(c)]) for c in shown if c in order]
        for ax, (title, image) in zip(axes[r], panels, strict=False):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: {names[labels[i]]}" if title == "CXR" else title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("A radiograph beside its ENH channels, in the study's order (LwPA, LPE, ELEA)", fontsize=11)
    fig.tight_layout()
    return "\n".join(["<h2>CXR and its ENH channels</h2>",
                      f"<p>One sample per class; the store keeps the channels as {', '.join(order).upper()}.</p>",
                      _img(_png(fig), "CXR beside LwPA, LPE and ELEA")])


def _properties_section(values, modes, by_class, by_source, has_sources) -> str:
    out = ["<h2>What could give a class away</h2>",
           "<p>Properties that have nothing to do with the disease but differ between classes or sources let a "
           "model tell them apart without looking at the lungs. For each, the pair whose distributions differ "
           "most (Kolmogorov-Smirnov distance D: 0 the same, 1 no overlap).</p>"]
    sentences = []
    for name in NUMERIC:
        for kind, groups in (("class", by_class), ("source", by_source)):
            if kind == "source" and not has_sources:
                continue
            pair = most_different(values[name], groups)
            if pair is not None and pair[2] == pair[2]:
                plural = {"class": "classes", "source": "sources"}[kind]
                sentences.append((pair[2], f"{name}: {plural} {pair[0]} and {pair[1]} (D = {pair[2]:.2f})"))
            out.append(_img(_property_figure(name, values[name], groups, kind), f"{name} per {kind}"))
    mode_rows = []
    for kind, groups in (("class", by_class), ("source", by_source)):
        for g, idx in groups.items():
            counts = Counter(modes[i] for i in idx)
            mode_rows.append([f"{kind} {g}", ", ".join(f"{m}: {n}" for m, n in counts.most_common())])
    out += ["<p>Original pixel modes:</p>", _table(["group", "modes (images)"], mode_rows)]
    sentences.sort(reverse=True)
    if sentences:
        out.insert(2, "<p><strong>Differ most:</strong> " + "; ".join(s for _, s in sentences[:3]) + ".</p>")
    return "\n".join(out)


def _limits_section(has_sources: bool) -> str:
    lines = ["A clean card is no proof of a clean dataset. It shows what pixels, sizes and counts reveal; it cannot "
             "show labels that are wrong, patients shared between classes under other ids, a disease that is "
             "itself marked differently (a hospital's own text or tubes on its sicker patients), or which of "
             "these a model actually uses: <code>trainer audit</code> measures that after training."]
    if not has_sources:
        lines.append("Without recorded sources it cannot show the class x source table, thumbnails and "
                     "properties per source, or Cramér's V.")
    return "<h2>What this card cannot show</h2>\n" + "\n".join(f"<p>{line}</p>" for line in lines)


def card_summary(path) -> dict:
    """What a card holds, read back from its HTML: sections and embedded images (for tests and scripts)."""
    text = Path(path).read_text(encoding="utf-8")
    return {"sections": [s for s in SECTIONS if f"<h2>{s}</h2>" in text],
            "images": text.count('src="data:image/png;base64,'), "bytes": len(text.encode()),
            "external": [u for u in ("http://", "https://", "src=\"/", "<script") if u in text]}

