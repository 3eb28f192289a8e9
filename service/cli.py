"""The ``itvsam`` command line. Entry point only: it configures logging and output, the work lives in the packages.

Exit codes: 0 success; 2 usage error; 3 the input study is refused (the message names the problem);
4 a path does not exist or cannot be written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dicomrt.errors import StudyError
from dicomrt.identifiers import short_hash
from dicomrt.reader import scan_study
from dicomrt.study import StudyIndex, index_summary

EXIT_REFUSED = 3
EXIT_PATH = 4

app = typer.Typer(help="itvsam: 4DCT to RTSTRUCT with SAM 3, phase-coherent refinement and the ITV.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(code: int, error: str, message: str, as_json: bool) -> typer.Exit:
    if as_json:
        console.print_json(json.dumps({"error": {"code": error, "message": message}}))
    else:
        errors.print(f"[bold red]error[/] {escape(f'[{error}]')}: {escape(message)}", highlight=False)
    return typer.Exit(code)


@app.command()
def inspect(
    study_dir: Annotated[Path, typer.Argument(help="Folder of DICOM files (searched recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON description instead of tables.")] = False,
    study: Annotated[str | None, typer.Option(help="Choose one study (UID or hash) when the folder holds several.")]
    = None,
    reference_percent: Annotated[float, typer.Option(help="Reference phase when the study has no AIP.")] = 50.0,
) -> None:
    """Read a 4DCT (or 3D CT) study from a folder of DICOM files and describe it; exit 3 if it cannot be used."""
    if not study_dir.exists():
        raise _fail(EXIT_PATH, "not_found", f"no such folder: {study_dir}", as_json)
    try:
        index = scan_study(study_dir, study=study, reference_percent=reference_percent)
    except StudyError as exc:
        raise _fail(EXIT_REFUSED, exc.code, str(exc), as_json) from None
    if as_json:
        summary = index_summary(index)
        summary["patient"] = {"name": index.attributes.patient_name, "id": index.attributes.patient_id}
        console.print_json(json.dumps(summary))
    else:
        _print_index(index)


def _print_index(index: StudyIndex) -> None:
    summary = index_summary(index)
    attributes = index.attributes
    geometry = summary["geometry"]
    console.print(f"[bold]Patient[/]  {escape(attributes.patient_name or '?')} "
                  f"(ID {escape(attributes.patient_id or '?')})")
    console.print(f"[bold]Study[/]    {summary['study_uid_hash']}  date {attributes.study_date or '?'}  "
                  f"'{escape(attributes.study_description)}'")
    nz, ny, nx = geometry["shape_zyx"]
    dz, dy, dx = geometry["spacing_mm_zyx"]
    console.print(f"[bold]Grid[/]     {nx} x {ny} pixels x {nz} slices; spacing {dx:.4g} x {dy:.4g} mm, slices "
                  f"{dz:.4g} mm; orientation {geometry['orientation']}; origin {geometry['origin_mm']} mm (LPS)")
    table = Table(title="4DCT phases" if index.is_4d else "CT volume (no respiratory phases)")
    for column in ("phase", "series", "description", "UID hash", "slices", "z range (mm)", "phase from"):
        table.add_column(column)
    for row in summary["phases"] + summary["derived"]:
        table.add_row(row["label"], str(row["series_number"] or "?"), row["description"], row["series_uid_hash"],
                      str(row["slices"]), f"{row['z_range_mm'][0]:g} .. {row['z_range_mm'][1]:g}",
                      row["phase_source"])
    console.print(table)
    reference = summary["reference"]
    console.print(f"[bold]Reference[/] {reference['label']} ({escape(reference['description'])}, "
                  f"{reference['series_uid_hash']})")
    files = summary["files"]
    console.print(f"[bold]Files[/]    {files['total']} files, {files['ct_instances']} CT images")
    for warning in index.warnings:
        console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
    logging.getLogger(__name__).info("inspected study %s", short_hash(attributes.study_instance_uid))
