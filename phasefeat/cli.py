"""The ``phasefeat`` command line (a click group; heavy imports live inside commands)."""

from __future__ import annotations

import logging
import sys

import click

PRESET_NAMES = ("kovesi", "lab_assd")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phasefeat")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="phasefeat")
@click.option("-v", "--verbose", is_flag=True, help="Log backend choices and timings to stderr.")
def cli(verbose: bool) -> None:
    """Local-phase features of chest radiographs: LwPA, LPE and ELEA.

    Run `phasefeat COMMAND --help` for the options of each command.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", default="enh.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True),
              help="PNG figure to write: the input beside LwPA, LPE, ELEA and their composite.")
@click.option("--enh-png", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the 3-channel ENH image itself as an 8-bit RGB PNG.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="kovesi", show_default=True,
              help="Parameter preset: Kovesi log-Gabor bank, or the lab's ASSD bank.")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Resize the input to SIZE x SIZE (antialiased) before enhancing "
                   "[default: keep the input size; 299 for the built-in phantom].")
@click.option("--backend", type=click.Choice(["numpy", "cupy", "auto"]), default="auto",
              show_default=True, help="Array backend: NumPy (CPU), CuPy (GPU), or CuPy when usable.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Compute precision.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the built-in phantom (used when no IMAGE is given).")
def enhance(image, output, enh_png, preset, size, backend, dtype, seed):
    """Enhance one radiograph (or a built-in synthetic phantom) and draw its maps.

    IMAGE is a PNG, JPEG, BMP or TIFF file (grey or colour, 8 or 16 bit). Without
    IMAGE a synthetic radiograph-like phantom is generated, so the command works
    on a machine with no data.
    """
    import numpy as np

    from .backend import BackendUnavailableError
    from .features import enhance as enhance_images
    from .figures import maps_figure
    from .imageio import ImageReadError, read_grey, resize
    from .params import PhaseParams

    params = PhaseParams.preset(preset)
    if image is None:
        from .phantom import chest_phantom

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
    try:
        enh = enhance_images(grey, params, backend=backend, dtype=dtype, out="uint8")
    except (ValueError, BackendUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    path = maps_figure(np.asarray(grey, dtype=np.float32), enh, params.channel_order, output,
                       title=f"{label} | preset {preset} | {grey.shape[1]}x{grey.shape[0]}")
    click.echo(f"wrote {path}")
    if enh_png:
        from .figures import atomic_save_png

        click.echo(f"wrote {atomic_save_png(enh, enh_png)}")


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="phasefeat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
