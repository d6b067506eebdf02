"""The ``trainer`` command line: compare, train, evaluate (heavy imports inside commands)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from phasefeat._cli_errors import OneLineErrorGroup

from .model import HEAD_ACTIVATIONS


def _apply(options, f):
    """Decorate ``f`` with click options in the order they are listed (as ``--help`` shows them)."""
    for option in reversed(options):
        f = option(f)
    return f


def _common(f):
    options = [
        click.option("--store", required=True, type=click.Path(dir_okay=False),
                     help="HDF5 store made by `phasefeat convert`."),
        click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
                     help="Maximum epochs (early stopping on validation loss)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Training batch size."),
        click.option("--image-size", type=click.IntRange(32, 2048), default=None,
                     help="Resize inputs on the fly to SIZE x SIZE [default: the store's size]."),
        click.option("--model", "model_names", default="vgg16", show_default=True, metavar="NAME[,NAME]",
                     help="Backbone: vgg16 (the study's, with --width), resnet50, densenet121, "
                          "efficientnetv2b0, mobilenetv3small, convnexttiny (keras.applications). "
                          "`compare` takes several: a grid dimension, paired seeds across models."),
        click.option("--width", type=click.FloatRange(min=0.01, max=1.0), default=1.0, show_default=True,
                     help="VGG16 filter-count multiplier (1/8 for quick CPU runs); other models need 1."),
        click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
                     help="Optimiser."),
        click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-4,
                     show_default=True, help="Learning rate (a positive finite number)."),
        click.option("--head-activation", type=click.Choice(HEAD_ACTIVATIONS), default="relu", show_default=True,
                     help="Activation of the added dense layer (the study changed activations)."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Reader threads feeding the model (one already delivers >2,000 images/s; "
                          "see docs/benchmarks.md)."),
        click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Early-stopping patience in epochs (best weights are restored)."),
        click.option("--split-seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                     help="Seed of the stratified, patient-grouped 49/21/30 split."),
        click.option("--deterministic/--no-deterministic", default=True, show_default=True,
                     help="Deterministic kernels (bit-reproducible on the CPU)."),
        click.option("--jit-compile", is_flag=True, help="Compile the model with XLA (off by default, logged)."),
        click.option("--mixed-precision", is_flag=True, help="float16 compute (GPU only)."),
        click.option("--augment", is_flag=True, help="Random flips and shifts on training batches only."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Local ImageNet 'notop' weights file of the backbone (e.g. Keras' "
                          "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5); width 1 only; for CXR the "
                          "first convolution's RGB kernels are summed. Nothing is downloaded."),
    ]
    return _apply(options, f)


def _design(f):
    """What the model is asked and shown, and how the test set is chosen."""
    options = [
        click.option("--target", type=click.Choice(["class", "source"]), default="class", show_default=True,
                     help="What to predict: the class, or the image's source (a source probe: how "
                          "visible is the hospital/collection in the pixels?). Needs recorded sources."),
        click.option("--occlude", type=click.Choice(["none", "center", "outside", "lungs", "non-lungs"]),
                     default="none", show_default=True,
                     help="Black out the central box (center: only borders, corners and markers remain) "
                          "or everything but it (outside), in training, validation and testing alike (a "
                          "layer of the saved model); lungs / non-lungs do the same with each image's lung "
                          "mask (stores converted from a layout with masks/ folders)."),
        click.option("--occlude-fraction", type=click.FloatRange(0.05, 0.95), default=0.6, show_default=True,
                     help="Side of the central box as a share of the image side."),
        click.option("--split-by", type=click.Choice(["patient", "source"]), default="patient",
                     show_default=True,
                     help="Keep all images of a patient (or of a source) in one part of the split."),
        click.option("--test-source", "test_sources", default=None, metavar="NAME[,NAME]",
                     help="External validation: these sources are the test set; train and validation "
                          "come from the others. The report lists the classes the test set holds."),
    ]
    return _apply(options, f)


def _cluster(f):
    """Where the runs run: one after another here, or one Dask task per run."""
    options = [
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run every run as a Dask task: local:N (N worker processes here; with GPUs, one "
                          "GPU each), tcp://HOST:PORT or PATH.json (a scheduler file: an existing cluster). "
                          "Workers need the store and OUT at the same paths (docs/distributed.md). Needs the "
                          "distributed extra. [default: one run after another in this process]"),
        click.option("--threads-per-run", type=click.IntRange(1, 4096), default=None,
                     help="Compute threads of every run, set before the framework starts (TensorFlow's CPU "
                          "results depend on it) and recorded in runs.csv; with --scheduler only. "
                          "[default: the cores of a worker's machine / the runs it runs at once]"),
        click.option("--gpus-per-run", type=click.IntRange(0, 1), default=None,
                     help="1: every run asks Dask for resources GPU=1, so a worker with one GPU runs one run "
                          "at a time; with --scheduler only. [default: 1 where the workers advertise a GPU "
                          "resource (local:N: where N GPUs are visible), else 0]"),
    ]
    return _apply(options, f)


def _parse_fractions(ctx, param, value):
    from .audit import parse_fractions

    try:
        return parse_fractions(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


OCCLUDE_FRACTIONS = click.option(
    "--occlude-fractions", default="0.5,0.7,0.9", show_default=True, metavar="F[,F...]",
    callback=_parse_fractions,
    help="The audit's occlusion curve: sides of the blacked-out central box, as shares of the image side "
         "(0.9 leaves a thin frame, corners and markers: no lung). Each size is one experiment, trained "
         "for every input and repeat: at the defaults (3 sizes, 2 inputs, 3 repeats) 18 runs, besides the "
         "reference (6 runs; the grid's own with compare --audit), the source probe and held-out sources.")


def _runner(kw):
    """The runner of ``--scheduler`` (checked before any work), or the in-process one."""
    from .experiment import GridError
    from .grid import SequentialRunner

    if kw["scheduler"] is None:
        for option in ("threads_per_run", "gpus_per_run"):
            if kw[option] is not None:
                raise click.UsageError(f"--{option.replace('_', '-')} needs --scheduler")
        return SequentialRunner()
    from .cluster import ClusterRunner

    try:
        return ClusterRunner(kw["scheduler"], threads_per_run=kw["threads_per_run"],
                             gpus_per_run=kw["gpus_per_run"], echo=click.echo)
    except GridError as exc:
        raise click.BadParameter(str(exc), param_hint="--scheduler") from None


def _models(kw, single: bool) -> tuple[str, ...]:
    from .backbones import MODEL_NAMES

    names = _pick(kw["model_names"], MODEL_NAMES, "--model")
    if single and len(names) > 1:
        raise click.BadParameter("this command trains one model; `compare` takes several",
                                 param_hint="--model")
    return names


def _base(kw):
    from .experiment import RunConfig

    design = {}
    if "target" in kw:
        design = {"target": kw["target"], "occlude": kw["occlude"], "occlude_fraction": kw["occlude_fraction"],
                  "split_by": kw["split_by"], "test_sources": _csv(kw["test_sources"] or "")}
    try:
        return RunConfig(epochs=kw["epochs"], batch_size=kw["batch_size"], image_size=kw["image_size"],
                         width=kw["width"], learning_rate=kw["learning_rate"], patience=kw["patience"],
                         optimizer=kw["optimizer"], head_activation=kw["head_activation"],
                         split_seed=kw["split_seed"], deterministic=kw["deterministic"],
                         jit_compile=kw["jit_compile"], mixed_precision=kw["mixed_precision"],
                         augment=kw["augment"], weights=kw["weights"],
                         model=_models(kw, single=False)[0], **design)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration (C libraries write there directly)."""
    import os

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _csv(value):
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _pick(value: str, allowed, option: str) -> tuple[str, ...]:
    """A comma-separated choice list, checked before any work starts."""
    items = _csv(value)
    if not items:
        raise click.BadParameter("give at least one value", param_hint=option)
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(map(repr, unknown))}; choose from "
                                 f"{', '.join(allowed)}", param_hint=option)
    if len(set(items)) != len(items):
        raise click.BadParameter("a value is given twice", param_hint=option)
    return items


INPUT_NAMES = ("cxr", "enh")


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="phasefeat", prog_name="trainer")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's own log lines (oneDNN, XLA, absl) and Keras' per-epoch output.")
@click.pass_context
def cli(ctx, verbose):
    """Train and compare image classifiers on a phasefeat store (the study's VGG16 or other Keras
    backbones; CXR vs ENH, CCE vs SCCE, ...), and audit them for shortcuts.
    """
    ctx.obj = {"verbose": verbose}


def _load_framework(*stores, trains_here: bool = True):
    """Open ``stores``, then import Keras (and its backend): ``--help``, a wrong option and a wrong
    path are answered in a fraction of a second, not after a deep-learning framework has loaded.

    Where the runs train on a Dask cluster (``trains_here`` false), the driver never loads Keras:
    its run processes do, and the driver starts (or refuses) seconds sooner.
    """
    import os

    from phasefeat.io.store import StoreError, open_store

    for path in stores:
        try:
            with open_store(path):
                pass
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    if not trains_here:
        return
    verbose = click.get_current_context().find_root().obj.get("verbose")
    if not verbose:
        # TensorFlow's C++ start-up chatter (oneDNN, absl, CPU features) is noise for a CLI user. Its
        # import-time lines ignore TF_CPP_MIN_LOG_LEVEL, so the import runs with stderr's file
        # descriptor on /dev/null; Python errors still surface after it is restored.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.nullcontext() if verbose else _quiet_stderr():
        import keras  # noqa: F401


@cli.command(short_help="The paired grid of inputs x losses x seeds, and its report.")
@_common
@_design
@_cluster
@click.option("--inputs", default="cxr,enh", show_default=True, help="Inputs to compare (cxr, enh).")
@click.option("--losses", default="cce,scce", show_default=True,
              help="Losses to compare: cce, scce, focal, weighted_cce, cce_ls.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Paired repeats per arm (repeat k of every arm uses seed + k).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="First training seed.")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Folder for runs, runs.csv, results.json, report.md and figures; reused on rerun.")
@click.option("--allow-other-files", is_flag=True,
              help="Write into an --out that holds files this command did not write (refused by default, "
                   "so that nothing of yours is overwritten: a file of the same name as one the report "
                   "writes is replaced).")
@click.option("--audit", "with_audit", is_flag=True,
              help="Also run the shortcut audit (see `trainer audit --help`) into OUT/audit, reusing the "
                   "grid's CCE runs as its reference, and add its verdict, curve and tables to report.md "
                   "and report.html.")
@OCCLUDE_FRACTIONS
def compare(inputs, losses, repeats, seed, out, with_audit, occlude_fractions, allow_other_files, **kw):
    """Run the paired grid inputs x losses x repeats and write the report.

    With --scheduler every run is a Dask task; a run that fails for a reason of its own is
    named in the report and the others go on (exit status 1 if any failed).
    """
    from .experiment import GridError
    from .grid import run_grid
    from .losses import LOSSES
    from .report import summary_lines, where_trained, write_report

    inputs = _pick(inputs, INPUT_NAMES, "--inputs")
    losses = _pick(losses, tuple(LOSSES), "--losses")
    models = _models(kw, single=False)
    base = _base(kw)
    for name in models[1:]:
        _check_model(base, name)
    if not allow_other_files:
        _check_out(out, marker=("grid.json",), own=GRID_FILES)
    runner = _runner(kw)
    _load_framework(kw["store"], trains_here=kw["scheduler"] is None)
    record = None
    try:
        with runner:
            results, failures = run_grid(kw["store"], out, inputs=inputs, losses=losses, repeats=repeats,
                                         seed=seed, base=base, workers=kw["workers"], models=models,
                                         runner=runner)
            if with_audit and not failures:  # its reference runs are the grid's own (CCE arm)
                record = _audit(kw["store"], f"{out}/audit", inputs, repeats, seed, base,
                                occlude_fractions, kw["workers"], runner, reuse_runs=f"{out}/runs")
    except (GridError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not results:
        raise click.ClickException(f"every run failed; the first: {failures[0]['run']}: {failures[0]['reason']}")
    appendix = []
    if record is not None:
        from .audit_report import audit_markdown

        appendix = ["", "# Shortcut audit", "", *audit_markdown(record, figure_prefix="audit/")]
    report = write_report(results, out, store_path=kw["store"], failures=failures, appendix=appendix,
                          audit=record)
    click.echo(f"wrote {report}, runs.csv, results.json and figures in {out}")
    click.echo(where_trained(results).replace("* trained: ", "trained: ", 1))
    for line in summary_lines(out, record):
        click.echo(f"  {line}")
    if failures:
        raise click.ClickException(f"{len(failures)} of {len(failures) + len(results)} runs failed "
                                   f"({', '.join(f['run'] for f in failures)}); report.md says why"
                                   + ("; the audit was not run" if with_audit else ""))


#: What `trainer train` writes into its --out (and `compare` into OUT/runs/<run>/).
RUN_FILES = {"model.keras", "result.json", "predictions.npz", "checkpoint.npz", "log.txt", "run.lock",
             "failure.json", "task.json"}
#: What `trainer compare` writes into its --out.
GRID_FILES = {"grid.json", "split.json", "runs", "runs.csv", "results.json", "report.md", "report.html", "audit",
              "schedule.json", "schedule.json.damaged", "learning_curves.png", "confusion_matrices.png", "per_seed_losses.png",
              "roc_curves.png", "figures.json"}


def _check_out(out, marker: tuple[str, ...], own: set[str]) -> None:
    """Refuse an output folder holding files this command did not write: nothing of a user's is
    overwritten. A folder the command wrote before (``marker`` present) is checked by the command."""
    path = Path(out)
    if not path.exists():
        return
    if not path.is_dir():
        raise click.BadParameter(f"{out} is a file, not a folder", param_hint="--out")
    names = {p.name for p in path.iterdir()}
    foreign = sorted(names - own)
    if not foreign or names & set(marker):
        return
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise click.BadParameter(f"{out} holds files this command did not write ({shown}); choose an empty or new "
                             "folder", param_hint="--out")


def _check_run_settings(out, cfg) -> None:
    """A folder holding a finished run of other settings is not trained over."""
    import json

    path = Path(out) / "result.json"
    if not path.exists():
        return
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        raise click.BadParameter(f"{path} is damaged (not a run's result); delete it or choose another folder",
                                 param_hint="--out")
    if record.get("config_digest") != cfg.digest():
        raise click.BadParameter(f"{out} holds a run made with other settings; choose another folder or delete it",
                                 param_hint="--out")


def _check_model(base, name):
    import dataclasses

    try:
        dataclasses.replace(base, model=name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _audit(store, out, inputs, repeats, seed, base, fractions, workers, runner, reuse_runs=None):
    import dataclasses

    from .audit import run_audit

    plain = dataclasses.replace(base, target="class", occlude="none", occlude_fraction=0.6, test_sources=(),
                                split_by="patient")
    return run_audit(store, out, inputs=inputs, repeats=repeats, seed=seed, base=plain,
                     occlude_fractions=fractions, workers=workers, runner=runner, reuse_runs=reuse_runs)


@cli.command(short_help="Disease or source? The shortcut audit of a store.")
@_common
@_cluster
@click.option("--inputs", default="cxr,enh", show_default=True, help="Inputs to audit (cxr, enh).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Paired repeats of every experiment (repeat k uses seed + k).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="First training seed.")
@OCCLUDE_FRACTIONS
@click.option("--out", default="audit", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the runs, audit.md, audit.json and occlusion_curve.png; reused on rerun.")
def audit(inputs, repeats, seed, occlude_fractions, out, **kw):
    """Disease or source? Train with the centre blacked out, probe the source, hold out a source.

    Writes OUT/audit.md: the class x source table with Cramér's V, the occlusion curve (accuracy
    and macro AUC against the share of the image blacked out), every experiment with 95 %
    intervals over seeds and test images next to chance, and a computed verdict per input
    ("inconclusive" when the whole-image model did not learn). Prints the number of runs
    before training. See docs/shortcut-audit.md for what each experiment means and its limits.
    """
    from .experiment import GridError

    inputs = _pick(inputs, INPUT_NAMES, "--inputs")
    _models(kw, single=True)
    base = _base(kw)
    runner = _runner(kw)
    _load_framework(kw["store"], trains_here=kw["scheduler"] is None)
    try:
        with runner:
            record = _audit(kw["store"], out, inputs, repeats, seed, base, occlude_fractions,
                            kw["workers"], runner)
    except (GridError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}/audit.md and audit.json")
    for what, v in record["verdicts"].items():
        click.echo(f"  {what.upper()}: {v['headline']}.")


@cli.command(short_help="Train one model and evaluate it on its test split.")
@_common
@_design
@click.option("--input", "what", type=click.Choice(["cxr", "enh"]), default="enh", show_default=True,
              help="Which store images to train on.")
@click.option("--loss", default="cce", show_default=True, help="Loss name (see `compare --help`).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Training seed.")
@click.option("--out", default="run", show_default=True, type=click.Path(file_okay=False),
              help="Folder for model.keras and result.json.")
@click.option("--allow-other-files", is_flag=True,
              help="Write into an --out that holds files this command did not write (refused by default).")
def train(what, loss, seed, out, allow_other_files, **kw):
    """Train one model and evaluate it on the test split."""
    import dataclasses

    from .experiment import GridError, train_run
    from .losses import LOSSES

    (loss,) = _pick(loss, tuple(LOSSES), "--loss")
    _models(kw, single=True)
    cfg = dataclasses.replace(_base(kw), input=what, loss=loss, seed=seed)
    if not allow_other_files:
        _check_out(out, marker=("result.json", "checkpoint.npz"), own=RUN_FILES)
    _check_run_settings(out, cfg)
    _load_framework(kw["store"])
    existed = Path(out).exists()
    try:
        result = train_run(kw["store"], cfg, out, workers=kw["workers"])
    except (GridError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if not existed and Path(out).is_dir() and not any(Path(out).iterdir()):
            Path(out).rmdir()  # a run that failed before writing anything leaves no folder
    click.echo(f"test loss {100 * result['test_loss']:.2f} %, accuracy {100 * result['test_accuracy']:.2f} % "
               f"(trained on {result['device']}, {result['backend']} backend, jit_compile={result['jit_compile']}, "
               f"mixed_precision={result['mixed_precision']}) -> {out}/result.json")


@cli.command(short_help="Metrics of a saved model on its own test set.")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="A .keras model saved by `trainer train` or `compare` (loaded in safe mode).")
@click.option("--store", required=True, type=click.Path(dir_okay=False), help="The store to evaluate on.")
@click.option("--input", "what", type=click.Choice(["cxr", "enh"]), default=None,
              help="Which store images to use [default: the kind the model was trained on; a different "
                   "one is refused].")
@click.option("--split-seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Evaluate on the test part of another split [default: the model's own, which it records].")
@click.option("--split-by", type=click.Choice(["patient", "source"]), default=None,
              help="Grouping of that other split [default: the model's].")
@click.option("--test-source", "test_sources", default=None, metavar="NAME[,NAME]",
              help="Test on these sources (external validation) [default: the model's].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per prediction batch.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the metrics as one JSON object (for scripts) instead of tables.")
def evaluate(model_path, store, what, split_seed, split_by, test_sources, batch_size, as_json):
    """Accuracy and per-class metrics of a saved model on its test set.

    The model carries its input kind, class names, target, occlusion and the split it was
    trained with (seed, grouping, test sources, store identity): by default the test part of
    that split, images the model never saw. Another split is an explicit choice, and the
    output says its test images may include training images.
    """
    _load_framework(store)
    from .data import StoreBatches  # a keras.utils.PyDataset: after the framework has loaded
    from .experiment import GridError, check_values, store_info
    from .metrics import classification_metrics
    from .saved import (
        ModelError,
        check_fit,
        load_model,
        model_info,
        model_inputs,
        model_test_split,
        pixels_note,
    )

    try:
        model = load_model(model_path)
        info = model_info(model)
        data = store_info(store, info["input"] or "enh", info["target"])
        what = check_fit(info, data["class_names"], what, data["params_digest"])
        check_values(store, what)
        split, settings, note = model_test_split(store, info, data, what, split_seed, split_by,
                                                 _csv(test_sources) if test_sources else None)
        inputs = model_inputs(info, what, data)
        note_on_pixels = pixels_note(info, data)
    except (ModelError, GridError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    labels, names = data["labels"], data["class_names"]
    test = StoreBatches(store, split.test, what, labels, len(names), "int", batch_size,
                        image_size=model.input_shape[1], **inputs)
    metrics = classification_metrics(labels[split.test], model.predict(test, verbose=0), names)
    test.close()
    from .report import finite_json, metrics_lines

    if as_json:
        click.echo(finite_json({"input": what, "target": info["target"], "split": settings, "note": note,
                                "pixels_note": note_on_pixels, **metrics}))
        return
    own = "the model's own test set: " if not note else ""
    click.echo(f"{model_path} on {store} ({what.upper()}, target: {info['target']}; {own}test part of "
               f"split seed {settings['split_seed']}, grouped by {settings['split_by']}"
               + (f", test sources {', '.join(settings['test_sources'])}" if settings["test_sources"] else "") + ")")
    for line in (note, note_on_pixels):
        if line:
            click.echo(f"note: {line}")
    for line in metrics_lines(metrics):
        click.echo(line)


@cli.command(short_help="Heat maps: where the models look on test images.")
@click.option("--model", "model_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="A saved .keras model; repeat it to show models side by side (e.g. a CXR and an ENH one).")
@click.option("--store", required=True, type=click.Path(dir_okay=False), help="The store the models fit.")
@click.option("--n", "per_kind", type=click.IntRange(min=1), default=2, show_default=True,
              help="Right and wrong test images of each class to show (at most n of each).")
@click.option("--out", default="explain", show_default=True, type=click.Path(file_okay=False),
              help="Folder for explain.png and explain.json.")
@click.option("--method", type=click.Choice(["grad-cam", "occlusion"]), default=None,
              help="Heat-map method [default: Grad-CAM on the TensorFlow backend, occlusion sensitivity "
                   "(forward passes only) on the others].")
@click.option("--split-seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Use the test part of another split [default: each model's own, which it records].")
@click.option("--occlude-fraction", type=click.FloatRange(0.05, 0.95), default=0.6, show_default=True,
              help="Side of the central box whose share of the heat-map mass is reported.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the choice of images.")
def explain(model_paths, store, per_kind, out, method, split_seed, occlude_fraction, seed):
    """Where do the models look? Heat maps over test images, and the mass inside the central box.

    A model that reads the image's source (markers, borders) puts its heat-map mass outside
    the central box; see docs/shortcut-audit.md.
    """
    from .experiment import GridError
    from .explain import explain as run_explain
    from .saved import ModelError

    _load_framework(store)
    try:
        record = run_explain(model_paths, store, out, per_kind=per_kind, split_seed=split_seed,
                             fraction=occlude_fraction, method=method, seed=seed)
    except (ModelError, GridError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}/explain.png and explain.json ({record['method']})")
    for m in record["models"]:
        lungs = "" if m["mass_in_lungs_mean"] is None else \
            f", {100 * m['mass_in_lungs_mean']:.0f} % inside the lung masks"
        click.echo(f"  {m['model']}: {100 * m['mass_in_box_mean']:.0f} % of the heat-map mass inside the "
                   f"central {m['box_fraction']:.0%} box{lungs} ({m['images']} test images)")


def main(argv=None):
    cli.main(args=argv, prog_name="trainer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
