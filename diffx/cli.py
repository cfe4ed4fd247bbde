"""The ``diffx`` command line: a thin typer front end over the library's stage functions.

No stage logic lives here (DESIGN.md section 1): each command loads params and calls one function. One error
boundary (:func:`main`) turns every failure into a message a user can act on: a :class:`DiffxError` (it names
the file, row or key and what was expected) or a known environment problem (credentials, permissions, a
missing file) exits 2 with its message; anything unexpected prints one line and a hint to rerun with
``--debug``, which shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from diffx import __version__, stages
from diffx.errors import DiffxError

app = typer.Typer(
    help="diffx: layout-guided cross-modal synthetic data pipeline. Add --debug to any command for a traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
shards_app = typer.Typer(help="Inspect, validate and export Parquet shard sets.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")

params_app = typer.Typer(help="Check and render params files (nothing runs).", no_args_is_help=True)
app.add_typer(params_app, name="params")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="override one setting, KEY=VALUE with a dotted key (YAML value); repeatable"),
]
T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except DiffxError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    """``["plan.num_samples=8"]`` -> ``{"plan.num_samples": 8}``; values are YAML, as with ``dvc exp run -S``."""
    import yaml

    from diffx.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key, e.g. plan.num_samples=8")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({err})") from None
    return out


def _load(params: Path, sets: list[str] | None, flags: dict[str, Any] | None = None, overlays: Any = ()) -> Any:
    """The params file, overlays, --set pairs, then dedicated flags (e.g. --steps): validated together."""
    from diffx.config import load_config

    def load() -> Any:
        overrides = _parse_sets(sets)
        overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
        return load_config(params, overlays, overrides)

    return _run(load)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "urllib3", "filelock"):  # library chatter would bury our own log
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the diffx version."""
    typer.echo(__version__)


@app.command()
def demo(
    params: ParamsOption = Path("params.yaml"),
    output: Annotated[str | None, typer.Option(help="override demo.output")] = None,
) -> None:
    """(Re)generate the procedural demo dataset (RGB + thermal + depth street scenes)."""
    from diffx.data.demo import write_demo

    config = _load(params, None)
    options = config.demo
    counts = write_demo(
        output or options.output,
        seed=options.seed,
        width=options.width,
        height=options.height,
        splits=options.splits,
        object_distance_m=options.object_distance_m,
    )
    typer.echo(json.dumps({"output": output or options.output, "samples": counts}))


@app.command()
def ingest(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    overrides: SetOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="read and check the source as ingest would, print what was found (samples per split, boxes per "
            "class, frame sizes, would-be quarantine, unmatched image files) and write nothing",
        ),
    ] = False,
) -> None:
    """Stage ingest: raw dataset -> validated canonical shards (data/canonical) + reports/ingest.json."""
    config = _load(params, overrides)
    if dry_run:
        from diffx.stages.survey import summary_lines, survey

        report = _run(lambda: survey(config.data, config.ingest, config.shards))
        for line in summary_lines(report):
            typer.echo(line, err=True)
        typer.echo(json.dumps(report))
        if report["would_fail"]:  # exit as the ingest would, so the dry run works as a pre-check in scripts
            typer.secho(f"error: ingest would fail: {report['would_fail']}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_INPUT)
        return
    result = _run(lambda: stages.ingest.run(config, progress=progress))
    summary = {k: v for k, v in result.report().items() if k != "quarantine"}
    typer.echo(json.dumps(summary))


@app.command("caption")
def caption_cmd(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    overrides: SetOption = None,
) -> None:
    """Stage caption: a caption per canonical sample from the configured backend (template or LMM), cached."""
    config = _load(params, overrides)
    result = _run(lambda: stages.caption.run(config, progress=progress))
    typer.echo(json.dumps(result.report()))


@app.command("refine")
def refine_cmd(params: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Stage refine: fix/flag captions, re-apply review decisions, write captioned shards + review queue."""
    config = _load(params, overrides)
    result = _run(lambda: stages.refine.run(config))
    typer.echo(json.dumps(result.report()))


@app.command("review")
def review_cmd(
    params: ParamsOption = Path("params.yaml"),
    reviewer: Annotated[str, typer.Option(help="your name, recorded with each decision")] = "",
) -> None:
    """Review flagged captions in the terminal; decisions go to refine.decisions (commit it, then dvc repro)."""
    from diffx.caption.review import review

    config = _load(params, None)
    counts = _run(
        lambda: review(
            config.refine,
            ask=lambda text: typer.prompt(text, default="s", show_default=False),
            say=typer.echo,
            reviewer=reviewer,
        )
    )
    typer.echo(json.dumps(counts))


@app.command("train-vae")
def train_vae(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    resume: Annotated[bool, typer.Option(help="continue from the newest matching checkpoint")] = True,
    resume_from: Annotated[str | None, typer.Option(help="resume from this checkpoint folder")] = None,
    steps: Annotated[int | None, typer.Option(help="override vae.train.steps")] = None,
    overrides: SetOption = None,
) -> None:
    """Stage train_vae: MP-VAE on the canonical shards. Multi-process: torchrun --nproc_per_node N -m diffx.cli."""
    config = _load(params, overrides, {"vae.train.steps": steps})
    result = _run(lambda: stages.train_vae.run(config, resume=resume, resume_from=resume_from, progress=progress))
    if result.metrics:
        typer.echo(json.dumps(result.metrics))


@app.command()
def check(
    gate: Annotated[str, typer.Argument(help="ingest | captions | vae | generated")],
    params: ParamsOption = Path("params.yaml"),
    data: Annotated[str | None, typer.Option(help="what to check (default: the guarded stage's output)")] = None,
    overrides: SetOption = None,
) -> None:
    """Run a great_expectations quality gate; exit 1 when it fails (stops dvc repro), 2 on bad input."""
    from diffx.quality.gate import GateFailed

    config = _load(params, overrides)
    try:
        report = stages.check.run(gate, config, data)
    except GateFailed as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except DiffxError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"ok: gate {gate}: {len(report.outcomes)} expectations passed over {report.rows} rows of {report.source}"
    )


@app.command("train-unet")
def train_unet_cmd(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    resume: Annotated[bool, typer.Option(help="continue from the newest matching checkpoint")] = True,
    resume_from: Annotated[str | None, typer.Option(help="resume from this checkpoint folder")] = None,
    steps: Annotated[int | None, typer.Option(help="override unet.train.steps")] = None,
    overrides: SetOption = None,
) -> None:
    """Stage train_unet: DiffX-UNet on MP-VAE latents. Multi-process: torchrun --nproc_per_node N -m diffx.cli."""
    config = _load(params, overrides, {"unet.train.steps": steps})
    result = _run(lambda: stages.train_unet.run(config, resume=resume, resume_from=resume_from, progress=progress))
    if result.metrics:
        typer.echo(json.dumps(result.metrics))


@app.command("plan")
def plan_cmd(params: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Stage plan: decide every synthetic sample's layout, caption, size and seed; write data/plan.parquet."""
    config = _load(params, overrides)
    typer.echo(json.dumps(_run(lambda: stages.plan.run(config))))


@app.command("generate")
def generate_cmd(
    params: ParamsOption = Path("params.yaml"),
    rank: Annotated[int | None, typer.Option(help="this worker's rank (default: $RANK or 0)")] = None,
    world_size: Annotated[int | None, typer.Option(help="workers in all (default: $WORLD_SIZE or 1)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    overrides: SetOption = None,
) -> None:
    """Stage generate: execute the plan into synthetic shards; resumable, any number of workers."""
    import os

    config = _load(params, overrides)
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    result = _run(lambda: stages.generate.run(config, rank=rank, world_size=world_size, progress=progress))
    typer.echo(json.dumps(result.report()))
    if not result.complete and (result.shards_busy or world_size == 1):  # ranks of a split run finish apart
        typer.secho(
            f"incomplete: {result.shards_busy} shard(s) are leased by another live worker and were left to it; "
            f"{config.generate.output} is not complete yet (rerun when that worker is done, or once its lease of "
            f"{config.generate.lease_seconds} s expires)",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command("curate")
def curate_cmd(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    overrides: SetOption = None,
) -> None:
    """Stage curate: score every generated sample (planned-box recall, realism, registration), keep the best."""
    config = _load(params, overrides)
    result = _run(lambda: stages.curate.run(config, progress=progress))
    report = result.report
    summary = {
        "output": config.curate.output,
        "kept": report["kept"],
        "samples": report["samples"],
        "box_recall": report["box_recall"],
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    typer.echo(json.dumps(summary))


@app.command("evaluate")
def evaluate_cmd(
    params: ParamsOption = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    overrides: SetOption = None,
) -> None:
    """Stage evaluate: FID/KID/precision/recall, cross-modal alignment, layout fidelity, downstream mAP."""
    config = _load(params, overrides)
    result = _run(lambda: stages.evaluate.run(config, progress=progress))
    summary = {
        "metrics": config.evaluate.metrics,
        "map50": result.headline["map50"],
        "recipe_gain_map50": result.headline["recipe_gain_map50"],
        "layout_fidelity_map50": result.metrics["layout_fidelity"]["generated"]["map50"],
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    typer.echo(json.dumps(summary))


@params_app.command("check")
def params_check(
    file: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml"),
    overlay: Annotated[list[Path] | None, typer.Option(help="overlay files (presets), applied in order")] = None,
    overrides: SetOption = None,
) -> None:
    """Validate a params file (with overlays and --set overrides) without running anything; exit 2 on error."""
    config = _load(file, overrides, overlays=tuple(overlay or ()))
    from diffx.models.text import token_limit

    _run(lambda: token_limit(config.conditioning))  # cross-section facts: the text encoder must be readable
    if conflicts := stages.output_conflicts(config):  # two stages writing one path: a run would eat the other's
        typer.secho("error: outputs collide: " + "; ".join(conflicts), fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_INPUT)
    typer.echo(f"ok: {file}" + "".join(f" + {o}" for o in overlay or ()))


@params_app.command("render")
def params_render(
    file: Annotated[Path, typer.Argument(help="params file to read")] = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="write here (default: print)")] = None,
    overlay: Annotated[list[Path] | None, typer.Option(help="overlay files (presets), applied in order")] = None,
    overrides: SetOption = None,
) -> None:
    """Print (or write) the file with every key spelled out, defaults filled in and documented."""
    from diffx.config import render_params

    _print_or_write(render_params(_load(file, overrides, overlays=tuple(overlay or ()))), out)


@params_app.command("readers")
def params_readers(
    out: Annotated[Path | None, typer.Option(help="write here, e.g. docs/readers.md (default: print)")] = None,
) -> None:
    """The reader reference: every ingest.source option with its default, and an example per dataset."""
    from diffx.reader_reference import render_reference

    _print_or_write(render_reference(), out)


@params_app.command("reference")
def params_reference(
    out: Annotated[Path | None, typer.Option(help="write here, e.g. docs/params.md (default: print)")] = None,
) -> None:
    """The settings reference: every key of params.yaml with its type, default and meaning."""
    from diffx.params_reference import render_params_reference

    _print_or_write(render_params_reference(), out)


def _print_or_write(text: str, out: Path | None) -> None:
    """Generated files (params.yaml, docs/readers.md) go to stdout, or atomically to ``out``."""
    from diffx.fsio import write_bytes_atomic

    if out is None:
        typer.echo(text, nl=False)
    else:
        write_bytes_atomic(str(out), text.encode("utf-8"))


class ExportFormat(StrEnum):
    coco = "coco"
    yolo = "yolo"


@shards_app.command("inspect")
def shards_inspect(root: str) -> None:
    """Summarise a shard set from its manifest: modalities, classes, rows and shards per split."""
    from diffx.shards.reader import ShardSet

    shard_set = _run(lambda: ShardSet(root))
    manifest = shard_set.manifest
    summary: dict[str, Any] = {
        "root": root,
        "dataset": manifest.dataset,
        "generated": manifest.generated,
        "producer": manifest.producer,
        "splits": {s: {"rows": manifest.total_rows(s), "shards": len(manifest.shards_of(s))} for s in manifest.splits},
        "bytes": sum(r.bytes for r in manifest.shards),
    }
    typer.echo(json.dumps(summary, indent=2))


@shards_app.command("validate")
def shards_validate(
    root: str, as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False
) -> None:
    """Check every shard against the manifest (size, sha256, rows, schema, unique ids); exit 1 on failure."""
    from diffx.shards.validate import validate_shard_set

    report = validate_shard_set(root)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        typer.echo(f"ok: {report.shards} shards, {report.rows} rows in {root}")
    else:
        for problem in report.problems:
            typer.secho(f"FAIL {problem}", fg=typer.colors.RED, err=True)
        typer.secho(f"{len(report.problems)} problem(s) in {root}", fg=typer.colors.RED, err=True)
    if not report.ok:
        raise typer.Exit(1)


@shards_app.command("export")
def shards_export(
    root: str,
    out: str,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.coco,
    split: Annotated[str | None, typer.Option(help="only this split")] = None,
    overwrite: Annotated[bool, typer.Option(help="clear OUT first when it is not empty")] = False,
    val_from: Annotated[
        str | None, typer.Option(help="yolo: take the val split from this shard set (e.g. data/canonical)")
    ] = None,
    val_split: Annotated[
        str,
        typer.Option(help="yolo: the split Ultralytics validates on (of --val-from, else of ROOT, e.g. test)"),
    ] = "val",
) -> None:
    """Export a shard set as COCO JSON + image folders, or as YOLO datasets (one per modality).

    OUT must be new or empty (or pass --overwrite), and apart from the sets it reads. A synthetic-only set has no
    val split, which Ultralytics requires: --val-from data/canonical adds the real val split; a train/test release
    (LLVIP, KAIST) validates on its test split with --val-split test.
    """
    from diffx.shards.export import export_coco, export_yolo, yolo_warnings

    if fmt is ExportFormat.coco:
        if val_from or val_split != "val":
            typer.secho("error: --val-from and --val-split are for --format yolo", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        counts = _run(lambda: export_coco(root, out, split, overwrite=overwrite))
    else:
        counts = _run(
            lambda: export_yolo(root, out, split, val_from=val_from, val_split=val_split, overwrite=overwrite)
        )
        for warning in yolo_warnings(root, counts, val_split, val_from):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(json.dumps({"out": out, "format": fmt.value, "images": counts}))


# ------------------------------------------------------------------------------------------ error boundary
EXIT_INPUT = 2  # bad input or environment: the message says what to fix
EXIT_BUG = 1  # unexpected: rerun with --debug and report it
EXIT_INCOMPLETE = 3  # generate: this worker stopped with shards of the set left to another worker's live lease

CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}


def _known_environment_error(err: BaseException) -> str | None:
    """A message for failures of the machine or storage rather than of diffx, or None."""
    import errno

    names = {cls.__name__ for cls in type(err).__mro__}
    if names & CREDENTIAL_ERRORS:
        return (
            f"object-store credentials are missing or incomplete ({err}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or a profile / storage options) for the s3:// paths in params.yaml"
        )
    if isinstance(err, PermissionError):
        return f"{err.filename or 'a file'}: permission denied; check who owns it and its mode"
    if isinstance(err, FileNotFoundError):
        return f"{err.filename or 'a file'}: not found"
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return f"{err.filename or 'a path'}: symbolic link loop"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"{err.filename or 'the output disk'}: no space left on the device"
    if isinstance(err, OSError) and err.errno == errno.EROFS:
        return f"{err.filename or 'the output'}: the file system is read-only; point the output at a writable place"
    if isinstance(err, OSError) and err.errno in (errno.EBUSY, errno.EXDEV):
        return (
            f"{err.filename or 'the output'}: cannot be replaced by rename ({err.strerror}); it is on another "
            "device than its staging folder or in use"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """The console entry point: run the command, and map every failure to an exit code and one message."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="diffx")  # standalone: usage errors and --help exit through SystemExit
        return 0
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else EXIT_INPUT)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except DiffxError as err:
        if debug:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        return EXIT_INPUT
    except Exception as err:
        if debug:
            raise
        known = _known_environment_error(err)
        if known is not None:
            typer.secho(f"error: {known}", fg=typer.colors.RED, err=True)
            return EXIT_INPUT
        first = (str(err).strip().splitlines() or [""])[0][:300]
        typer.secho(
            f"error: unexpected {type(err).__name__}: {first}\n"
            "this is a bug in diffx or an input it does not check yet; rerun with --debug for the traceback "
            "and report it",
            fg=typer.colors.RED,
            err=True,
        )
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
