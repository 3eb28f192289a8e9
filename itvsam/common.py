"""What every command group shares: the app, the consoles, exit codes, refusals, output folders, progress bars.

Entry point only: logging and output are configured here, the work lives in the packages.

Exit codes: 0 success; 2 usage error (including invalid options or settings); 3 an input (study, masks, template) is
refused (the message names the problem); 4 a path does not exist, or an output folder is not empty; 5 the model cannot
be loaded; 6 a submitted job failed or was cancelled; 7 the service cannot be reached or refused the request
(authentication, limits).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from jobs.options import InvalidOptionsError, JobOptions, parse_options

EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_PATH = 4
EXIT_MODEL = 5
EXIT_JOB_FAILED = 6
EXIT_SERVICE = 7

S = TypeVar("S")

app = typer.Typer(help="itvsam: 4DCT to RTSTRUCT with SAM 3, phase-coherent refinement and the ITV.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(code: int, error: str, message: str, as_json: bool = False) -> typer.Exit:
    """Print the refusal (``error [code]: message``, or its JSON form) and return the exit to raise."""
    if as_json:
        console.print_json(json.dumps({"error": {"code": error, "message": message}}))
    else:
        errors.print(f"[bold red]error[/] {escape(f'[{error}]')}: {escape(message)}", highlight=False)
    return typer.Exit(code)


def load_settings(getter: Callable[[], S]) -> S:
    """A process's settings from its cached getter; invalid ones exit 2 with one line naming each variable."""
    try:
        return getter()
    except ValidationError as exc:
        problems = "; ".join(
            (f"ITVSAM_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise fail(EXIT_USAGE, "invalid_settings", problems) from None


def read_options(path: Path | None) -> JobOptions:
    """Job options from a JSON file (none: the defaults); a bad file or option exits 2 naming the field."""
    if path is None:
        return JobOptions()
    try:
        return parse_options(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(EXIT_USAGE, "invalid_options", f"{path}: cannot read job options as JSON: {exc}") from None
    except InvalidOptionsError as exc:
        raise fail(EXIT_USAGE, exc.code, f"{path}: {exc}") from None


def empty_output(out: Path, force: bool | None, source: Path | None = None) -> None:
    """Refuse to write into a folder that already holds files, unless ``force`` (None: the command has no --force),
    and refuse an output folder that is, holds or lies inside the input ``source`` (inputs are never touched)."""
    if source is not None:
        o, i = out.resolve(), source.resolve()
        if o == i or i in o.parents or o in i.parents:
            raise fail(EXIT_PATH, "output_overlaps_input", f"output folder {out} overlaps the input {source}")
    if out.exists() and any(out.iterdir()) and not force:
        hint = "" if force is None else " or pass --force"
        raise fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder{hint}")
    out.mkdir(parents=True, exist_ok=True)


def clear(out: Path) -> None:
    """Remove what a previous run left in ``out`` (only with --force)."""
    for path in out.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextmanager
def job_progress(first: str) -> Iterator[Callable[[Any], None]]:
    """A progress bar for a pipeline run; yields the callback that takes ``workers.pipeline.Progress``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors) as bar:
        task = bar.add_task(first, total=1.0)
        yield lambda progress: bar.update(task, completed=progress.fraction, description=progress.message[:28])


@contextmanager
def loading_model(model_dir: Path) -> Iterator[None]:
    """Our progress while a model loads (transformers' own bar is off: ``model.sam3``), then how long it took."""
    started = time.perf_counter()
    with errors.status(f"loading SAM 3 from {escape(str(model_dir))}", spinner="dots"):
        yield
    errors.print(f"loaded SAM 3 from {escape(str(model_dir))} in {time.perf_counter() - started:.1f} s",
                 highlight=False)


def torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
