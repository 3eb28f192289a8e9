"""The ``itvsam`` command line. Entry point only: it configures logging and output, the work lives in the packages.

Exit codes: 0 success; 2 usage error; 3 an input (study, masks, template) is refused (the message names the problem);
4 a path does not exist, or an output folder is not empty.
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

from dicomrt.derived import write_projections
from dicomrt.errors import StudyError
from dicomrt.identifiers import short_hash
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance
from dicomrt.reader import load_study, scan_study
from dicomrt.rt_errors import RTError
from dicomrt.rt_outputs import OutputMode, check_masks, load_masks_npz, write_rtstructs
from dicomrt.seg import write_segs
from dicomrt.structures import load_template, thoracic_template
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


def _empty_output(out: Path, force: bool) -> None:
    """Refuse to write into a folder that already holds files, unless ``force`` (then its files may be replaced)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise _fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder or pass --force", False)
    out.mkdir(parents=True, exist_ok=True)


@app.command()
def contour(
    study_dir: Annotated[Path, typer.Argument(help="Folder of the study's DICOM files.")],
    masks_npz: Annotated[Path, typer.Argument(help="Masks: an .npz of bool arrays named after the structures, "
                                                   "(phase, z, y, x) or (z, y, x) on the study's grid, z ascending "
                                                   "in patient z, phases in percent order.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")],
    template: Annotated[Path | None, typer.Option(help="Site template (YAML/JSON); default: thoracic.")] = None,
    mode: Annotated[OutputMode, typer.Option(help="Which RTSTRUCTs to write.")] = OutputMode.ALL,
    seg: Annotated[bool, typer.Option(help="Also write a DICOM SEG per phase.")] = True,
    projections: Annotated[bool, typer.Option(help="Write AIP/MIP series the study lacks; the reference "
                                                   "RTSTRUCT then goes on the new AIP.")] = False,
    force: Annotated[bool, typer.Option(help="Write into a non-empty output folder.")] = False,
) -> None:
    """Write RTSTRUCTs (and DICOM SEG) for a study from masks made elsewhere; exit 3 if study or masks are refused."""
    for path in (study_dir, masks_npz):
        if not path.exists():
            raise _fail(EXIT_PATH, "not_found", f"no such file or folder: {path}", False)
    _empty_output(out, force)
    try:
        index = scan_study(study_dir)
        specs = load_template(template) if template else thoracic_template()
        masks = check_masks(index, load_masks_npz(masks_npz), specs)
        provenance = Provenance(model_identity="external masks (itvsam contour)")
        reference = None
        if projections:
            written = write_projections(load_study(index), out / "derived", provenance)
            reference = next((s for s in written if s.kind is SeriesKind.AVERAGE), None)
        paths = write_rtstructs(index, masks, specs, out, mode, provenance, reference=reference)
        if seg:
            paths += write_segs(masks, out / "seg", provenance)
    except (StudyError, RTError) as exc:
        raise _fail(EXIT_REFUSED, exc.code, str(exc), False) from None
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
