"""The ``phasefeat`` command line (a click group; heavy imports live inside commands)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import click

from ._cli_errors import OneLineErrorGroup

# Mirrors phasefeat.params.PRESETS (kept literal so `--help` needs no heavy import).
PRESET_NAMES = ("qi2021", "kovesi", "assd_lpe")
PRESET_HELP = ("Parameter preset: qi2021 = the Hacihaliloglu lab's pipeline as its public port "
               "runs it (ASSD 25/75 px, ELEA from PE; the study's ENH), kovesi = log-Gabor "
               "4/8/16 px with the paper's formulas, assd_lpe = the lab's filters with ELEA from "
               "LPE. See docs/algorithm.md.")


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="phasefeat", prog_name="phasefeat")
@click.option("-v", "--verbose", is_flag=True, help="Log backend choices and timings to stderr.")
def cli(verbose: bool) -> None:
    """Local-phase features of chest radiographs: LwPA, LPE and ELEA.

    Run `phasefeat COMMAND --help` for the options of each command.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


#: What a figure can be written as (matplotlib's formats that viewers open).
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff", ".webp")


def _figure_path(ctx, param, value):
    """A figure's output path, refused at once when matplotlib cannot write its format."""
    if value is not None and Path(value).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{value}: write the figure as {', '.join(FIGURE_SUFFIXES)}")
    return value


def _png_path(ctx, param, value):
    if value is not None and Path(value).suffix.lower() != ".png":
        raise click.BadParameter(f"{value}: the ENH image is written as PNG (name it .png)")
    return value


@cli.command(short_help="One radiograph (or a phantom) to its ENH maps as PNG.")
@click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", default="enh.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True), callback=_figure_path,
              help="Figure to write (.png, .pdf, .svg, ...): the input beside LwPA, LPE, ELEA and their "
                   "composite.")
@click.option("--enh-png", type=click.Path(dir_okay=False, writable=True), default=None, callback=_png_path,
              help="Also write the 3-channel ENH image itself as an 8-bit RGB PNG.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="qi2021", show_default=True,
              help=PRESET_HELP)
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Resize the input to SIZE x SIZE (antialiased) before enhancing "
                   "[default: keep the input size; 299 for the built-in phantom].")
@click.option("--backend", type=click.Choice(["numpy", "cupy", "auto"]), default="auto",
              show_default=True, help="Array backend: NumPy (CPU), CuPy (GPU), or CuPy when usable.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Compute precision.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the built-in phantom (used when no IMAGE is given).")
def enhance(image, output, enh_png, preset, size, backend, dtype, seed):
    """Enhance one radiograph (or a built-in synthetic phantom) and draw its maps.

    IMAGE is a PNG, JPEG, BMP or TIFF file (grey or colour, 8 or 16 bit). Without
    IMAGE a synthetic radiograph-like phantom is generated, so the command works
    on a machine with no data.
    """
    import numpy as np

    from .backend import BackendUnavailableError
    from .io.imageio import ImageReadError, read_grey, resize
    from .maths.features import enhance as enhance_images
    from .params import PhaseParams
    from .tools.figures import maps_figure

    params = PhaseParams.preset(preset)
    if image is not None:
        for flag, target in (("--output", output), ("--enh-png", enh_png)):
            if target and Path(target).exists() and Path(target).resolve() == Path(image).resolve():
                raise click.BadParameter(f"{target} is the input image; writing there would destroy it",
                                         param_hint=flag)
    if image is None:
        from .tools.phantom import chest_phantom

        grey = chest_phantom(size or 299, seed=seed)
        label = f"synthetic phantom (seed {seed})"
    else:
        try:
            grey = read_grey(image)
        except ImageReadError as exc:
            raise click.ClickException(str(exc)) from None
        label = image
        if size is not None:
            grey = resize(grey, (size, size))
    import time

    started = time.perf_counter()
    try:
        enh = enhance_images(grey, params, backend=backend, dtype=dtype, out="uint8")
    except (ValueError, BackendUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("phasefeat").info("enhance: %dx%d in %.3f s (preset %s, %s)", grey.shape[1],
                                        grey.shape[0], time.perf_counter() - started, preset, dtype)
    path = maps_figure(np.asarray(grey, dtype=np.float32), enh, params.channel_order, output,
                       title=f"{label} | preset {preset} | {grey.shape[1]}x{grey.shape[0]}")
    click.echo(f"wrote {path}")
    if enh_png:
        from .tools.figures import atomic_save_png

        click.echo(f"wrote {atomic_save_png(enh, enh_png)}")


class FeaturesAt(click.ParamType):
    """``native`` or a working size in pixels."""

    name = "native|SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "native":
            return value
        text = str(value).strip().lower()
        if text == "native":
            return "native"
        try:
            size = int(text)
        except ValueError:
            self.fail(f"expected 'native' or a size in pixels, got {value!r}", param, ctx)
        if not 8 <= size <= 16384:
            self.fail(f"a working size must be 8..16384 pixels, got {size}", param, ctx)
        return size


def _parse_aliases(values) -> dict[str, str]:
    aliases = {}
    for item in values:
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise click.BadParameter(f"expected NAME=CLASS, got {item!r}", param_hint="--alias")
        aliases[name.strip()] = target.strip()
    return aliases


def _load_params(preset: str, params_file):
    from .params import PhaseParams

    if params_file is None:
        return PhaseParams.preset(preset)
    try:
        return PhaseParams.from_json(Path(params_file).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        raise click.BadParameter(f"{params_file}: {exc}", param_hint="--params") from None


def _check_input_folder(input_dir: str) -> None:
    """INPUT must be a folder; a file there is most often a store or a model passed in the wrong place."""
    from pathlib import Path

    from .io.store import known_kind

    path = Path(input_dir)
    if not path.is_file():
        return
    kind = known_kind(path)
    if kind == "a phasefeat store":
        raise click.BadParameter(f"{input_dir} is a phasefeat store (what convert writes), not a folder of "
                                 "radiographs; `phasefeat inspect` and `trainer --store` read it",
                                 param_hint="INPUT")
    raise click.BadParameter(f"{input_dir} is " + (kind.split(",")[0] if kind else "a file")
                             + ", not a folder of radiographs (INPUT/<class>/...)", param_hint="INPUT")


@cli.command(short_help="A folder of radiographs to one HDF5 store of CXR and ENH.")
@click.argument("input_dir", metavar="INPUT", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(dir_okay=False, path_type=str))
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Label file instead of class folders: a CSV with a header naming path and label "
                   "columns and, optionally, patient_id and source columns; or a COVIDx file (patient_id "
                   "filename class source, no header). Paths are relative to INPUT.")
@click.option("--classes", default=None, metavar="A,B,C",
              help="Pin the class order (after aliasing); other classes are listed as failures. "
                   "[default: alphanumeric, as keras image_dataset_from_directory]")
@click.option("--alias", "aliases", multiple=True, metavar="NAME=CLASS",
              help="Extra class-name alias, repeatable (built in: COVID-19->covid, "
                   "Viral Pneumonia->pneumonia, No Finding->normal, ...).")
@click.option("--source-pattern", default=None, metavar="REGEX",
              help="Record each sample's source (hospital, archive) from its path relative to INPUT: "
                   "the first group of REGEX, e.g. '^[^/]+/([a-z]+)_' for names like covid/ieee_1.png, "
                   "or '^([^/]+)/' for a folder level. Overrides a label file's source column (CSV "
                   "'source', COVIDx 4th column).")
@click.option("--patient-pattern", default=None, metavar="REGEX",
              help="Record each sample's patient id from its path relative to INPUT: the first group of "
                   "REGEX, e.g. '([0-9]+)_[0-9]+[.]png$' for NIH names like 00000013_005.png. The split "
                   "keeps a patient's images in one part. Overrides a label file's patient_id column.")
@click.option("--size", type=click.IntRange(8, 16384), default=299, show_default=True,
              help="Stored size: every image becomes SIZE x SIZE.")
@click.option("--fit", "fit_mode", type=click.Choice(["stretch", "pad", "crop"]),
              default="stretch", show_default=True,
              help="How to reach the square size: stretch (as the study), pad (keep aspect, black "
                   "borders) or crop (keep aspect, centre crop).")
@click.option("--features-at", type=FeaturesAt(), default="native", show_default=True,
              help="Where ENH is computed: native = at each image's own resolution (after the --fit "
                   "geometry), SIZE = at SIZE x SIZE; the maps are then resized to --size with the "
                   "radiograph's filter. --features-at equal to --size computes them on the stored "
                   "image (fastest on a CPU). docs/algorithm.md compares the choices.")
@click.option("--cxr-dtype", type=click.Choice(["uint8", "uint16"]), default="uint8",
              show_default=True, help="Storage type of the resized radiograph.")
@click.option("--enh-dtype", type=click.Choice(["uint8", "float16", "float32"]), default="uint8",
              show_default=True, help="Storage type of ENH (uint8 0..255, floats in [0, 1]).")
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none",
              show_default=True, help="HDF5 filter (ENH maps barely compress; see docs/store-format.md).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="qi2021", show_default=True,
              help=PRESET_HELP)
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None,
              help="PhaseParams as JSON (PhaseParams.to_json()); overrides --preset.")
@click.option("--backend", type=click.Choice(["numpy", "cupy", "auto"]), default="auto",
              show_default=True, help="Where the features are computed.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decoding (and, on the CPU, feature) processes. [default: all cores]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per feature batch on the GPU.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=100_000_000, show_default=True,
              help="Refuse larger images (decompression bombs) before decoding them; listed as failures.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=256 * 2**20, show_default=True,
              help="Refuse larger files before reading them; listed as failures.")
@click.option("--piece-size", type=click.IntRange(min=1), default=None,
              help="Samples per resumable piece (a kill loses at most one piece per worker). "
                   "[default: a sixteenth of the images, 4 to 64 (to 256 with --scheduler), so that "
                   "no core waits long for the last piece]")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the pieces on Dask: tcp://HOST:8786 or PATH.json (a scheduler file; an existing "
                   "cluster) or local:N (a LocalCluster of N worker processes). Needs the distributed extra.")
@click.option("--shard-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for finished pieces, visible to every Dask worker [default: next to OUTPUT].")
@click.option("--virtual", is_flag=True,
              help="Keep the images in OUTPUT.shards/ and make the store's /cxr and /enh HDF5 virtual "
                   "datasets over them (no final copy; move the store and its shards together).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing store (it stays readable until the new one is complete) and "
                   "discard unfinished pieces made with other settings; pieces of this same command are "
                   "reused.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any file failed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def convert(input_dir, output, labels, classes, aliases, source_pattern, patient_pattern, size, fit_mode, features_at,
            cxr_dtype, enh_dtype, compression, preset, params_file, backend, workers, batch_size,
            max_pixels, max_bytes, piece_size, scheduler, shard_dir, virtual, overwrite, strict, quiet):
    """Convert a folder of radiographs into one HDF5 store of CXR and ENH.

    INPUT holds class folders (INPUT/<class>/..., `masks/` ignored) or, with
    --labels, the files a label file names. Killed at any moment, the same
    command resumes where it stopped; the store appears under OUTPUT only when
    complete. Every file ends up either in the store or in its failures table.
    """
    import os

    from .backend import BackendUnavailableError
    from .io.convert import ConvertError, ConvertOptions
    from .io.convert import convert as run_convert
    from .io.discover import DiscoveryError
    from .io.distributed import DaskUnavailableError, parse_scheduler

    _check_input_folder(input_dir)
    if scheduler:
        try:
            parse_scheduler(scheduler)
        except DaskUnavailableError as exc:
            raise click.BadParameter(str(exc), param_hint="--scheduler") from None
    params = _load_params(preset, params_file)
    options = ConvertOptions(size=size, fit=fit_mode, cxr_dtype=cxr_dtype, enh_dtype=enh_dtype,
                             max_pixels=max_pixels, max_bytes=max_bytes, features_at=features_at,
                             piece_size=piece_size)
    try:
        summary = run_convert(
            input_dir, output, params=params, options=options, labels=labels,
            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
            aliases=_parse_aliases(aliases), workers=workers or os.cpu_count() or 1,
            backend=backend, batch_size=batch_size, overwrite=overwrite, compression=compression,
            progress=not quiet, command_line=" ".join(["phasefeat", *sys.argv[1:]]),
            scheduler=scheduler, shard_dir=shard_dir, virtual=virtual, source_pattern=source_pattern,
            patient_pattern=patient_pattern)
    except (ConvertError, DiscoveryError, BackendUnavailableError, DaskUnavailableError,
            ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; finished pieces are kept: rerun the same command "
                                   "to resume") from None
    if summary.already_complete:
        click.echo(f"{summary.output} is complete ({summary.converted} of {summary.discovered} images); "
                   "removed what an interrupted run left behind")
        return
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"converted {summary.converted} of {summary.discovered} images into {summary.output} "
               f"in {summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s, "
               f"{summary.backend} on {summary.device}"
               + (f"; resumed {summary.resumed_pieces} finished pieces" if summary.resumed_pieces else "")
               + ")")
    _say_duplicates(summary.output)
    if summary.failed:
        click.echo(f"failed {summary.failed}:")
        for reason, n in sorted(summary.failures_by_reason.items(), key=lambda kv: -kv[1]):
            click.echo(f"  {n:>6d}  {reason}")
        click.echo(f"details: phasefeat inspect {summary.output}")
        if summary.converted == 0:
            raise click.ClickException(f"no image could be converted; {summary.output} lists why")
        if strict:
            sys.exit(1)


def _say_duplicates(path) -> None:
    from .io.inspect_store import duplicate_summary

    with _open(path) as store:
        line = duplicate_summary(store.sha256, store.labels)
    if line:
        click.echo(f"duplicates: {line} (phasefeat inspect {path} lists them)")


@contextlib.contextmanager
def _open(path):
    """The store, with every :class:`StoreError` (at opening or later) as a one-line error."""
    from .io.store import StoreError, open_store

    try:
        with open_store(path) as store:
            yield store
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command(short_help="What a store holds: counts, sources, provenance, failures.")
@click.argument("store_path", metavar="STORE", type=click.Path(dir_okay=False))
@click.option("--verify", is_flag=True,
              help="Re-hash the source files and report missing or changed ones (exit status 1 if any "
                   "is missing, changed, or stored with a path that leaves the root).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where the sources are now, for --verify [default: the recorded input root].")
@click.option("--all-failures", is_flag=True, help="List every failed file, not the first 20.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the store card: one self-contained page (images embedded, no network) with "
                   "counts, class x source and Cramér's V, thumbnails per class and source, CXR beside its ENH "
                   "channels, and the sizes, bit depths, grey levels and mean images that could give a class "
                   "away (docs/store-card.md).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Chooses the card's thumbnails and samples.")
def inspect(store_path, verify, root, all_failures, html_path, seed):
    """Describe a store: counts per class, shapes, parameters, provenance, failures."""
    from .io.inspect_store import report, verify_sources

    if html_path is not None and not Path(html_path).resolve().parent.is_dir():
        raise click.BadParameter(f"{html_path}: its folder does not exist", param_hint="--html")
    with _open(store_path) as store:
        click.echo(report(store, failures_shown=10**9 if all_failures else 20))
        if html_path is not None:
            from .tools.store_card import write_card

            click.echo(f"card         {write_card(store, html_path, seed=seed)}")
        if verify:
            result = verify_sources(store, root)
            click.echo(f"verify       {result['checked']} re-hashed under {result['root']}, "
                       f"{len(result['missing'])} missing, {len(result['mismatched'])} changed, "
                       f"{len(result['refused'])} refused")
            for rel in result["mismatched"]:
                click.echo(f"  CHANGED  {rel}")
            for rel in result["refused"][:20]:
                click.echo(f"  REFUSED  {rel} (leaves the root)")
            for rel in result["missing"][:20]:
                click.echo(f"  missing  {rel}")
            if result["mismatched"] or result["missing"] or result["refused"]:
                hint = " (is --root where the sources are now?)" if result["missing"] else ""
                raise click.ClickException(f"verification failed{hint}")


@cli.command(short_help="A figure of a store's samples: CXR beside its ENH maps.")
@click.argument("store_path", metavar="STORE", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="preview.png", show_default=True,
              type=click.Path(dir_okay=False), callback=_figure_path,
              help="Figure to write (.png, .pdf, .svg, ...).")
@click.option("--index", "indices", type=int, multiple=True,
              help="Sample to show, repeatable [default: random samples of each class].")
@click.option("--per-class", type=click.IntRange(min=1), default=1, show_default=True,
              help="Random samples per class when no --index is given.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the random choice.")
def preview(store_path, output, indices, per_class, seed):
    """Draw samples of a store: CXR beside LwPA, LPE, ELEA and the composite (like Fig. 1)."""
    import numpy as np

    from .tools.figures import preview_figure

    with _open(store_path) as store:
        n = len(store)
        if indices:
            bad = [i for i in indices if not 0 <= i < n]
            if bad:
                raise click.BadParameter(f"{bad} out of range for {n} samples", param_hint="--index")
            chosen = list(indices)
        else:
            rng = np.random.default_rng(seed)
            chosen = []
            for c in range(len(store.class_names)):
                members = np.flatnonzero(store.labels == c)
                take = min(per_class, len(members))
                chosen += sorted(rng.choice(members, take, replace=False).tolist())
        if not chosen:
            raise click.ClickException("the store holds no samples")
        names, paths = store.class_names, store.source_paths
        rows = [(f"#{i} {names[store.labels[i]]}\n{Path(paths[i]).name[:28]}",
                 store.read(i, "cxr"), store.read(i, "enh")) for i in chosen]
        order = store.params.channel_order
    click.echo(f"wrote {preview_figure(rows, order, output, title=str(store_path))}")


@cli.command("demo-data", short_help="Write synthetic phantoms in class folders (a demo input).")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), default=40, show_default=True,
              help="Images per class (normal, pneumonia, covid).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed; same seed, same files.")
@click.option("--min-size", type=click.IntRange(min=64), default=256, show_default=True,
              help="Smallest image side in pixels.")
@click.option("--max-size", type=click.IntRange(min=64), default=512, show_default=True,
              help="Largest image side in pixels.")
@click.option("--shortcut", is_flag=True,
              help="Plant a known shortcut: each image carries its simulated site's marker (a corner "
                   "letter and a frame grey level) and the site depends on the class; file names start "
                   "with the site (convert with --source-pattern '^[^/]+/(site[a-z])_').")
def demo_data(out, per_class, seed, min_size, max_size, shortcut):
    """Write SYNTHETIC radiograph-like phantoms in the class-folder layout.

    OUT/normal, OUT/pneumonia (a lobar consolidation in one lung) and OUT/covid
    (bilateral peripheral hazy opacities), as 8/16-bit PNG and JPEG of varied
    sizes. Not patient data: every file and the folder say so. Rerunning with
    the same settings reuses a complete folder.
    """
    from .tools.demo_data import DemoDataError, write_demo_data

    if min_size > max_size:
        raise click.BadParameter("--min-size must not exceed --max-size", param_hint="--min-size")
    try:
        result = write_demo_data(out, per_class=per_class, seed=seed, min_size=min_size,
                                 max_size=max_size, progress=True, shortcut=shortcut)
    except DemoDataError as exc:
        raise click.ClickException(str(exc)) from None
    verb = "reused" if result["reused"] else "wrote"
    click.echo(f"{verb} {result['files']} synthetic images in {out} ({per_class} per class, seed {seed}"
               + (", planted site shortcut" if shortcut else "") + ")")


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="phasefeat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
