"""Study commands (the DICOM core, no model): ``phantom``, ``inspect``, ``contour``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dicomrt.errors import StudyError
from dicomrt.identifiers import short_hash
from dicomrt.layout import OutputLayout
from dicomrt.outputs import write_derived, write_outputs
from dicomrt.phantom import (
    Artifact,
    Breathing,
    Compression,
    PhantomConfig,
    PhantomSize,
    VendorStyle,
    generate_phantom,
    write_phantom,
)
from dicomrt.provenance import Provenance
from dicomrt.reader import load_study, scan_study
from dicomrt.rt_errors import RTError
from dicomrt.rt_outputs import OutputMode, check_masks, load_masks_npz
from dicomrt.structures import load_template, thoracic_template
from dicomrt.study import StudyIndex, index_summary
from itvsam.common import EXIT_PATH, EXIT_REFUSED, EXIT_USAGE, app, console, empty_output, fail


@app.command()
def phantom(
    out_dir: Annotated[Path, typer.Argument(help="Output folder: DICOM in OUT_DIR/dicom, truth in OUT_DIR/truth.npz.")],
    seed: Annotated[int, typer.Option(min=0, help="Anatomy, tumour and noise derive from it.")] = 0,
    size: Annotated[PhantomSize, typer.Option(help="small: 128x128x44 (tests); full: 512x512x120.")]
    = PhantomSize.SMALL,
    vendor: Annotated[VendorStyle, typer.Option(help="How phases are told apart in the files.")]
    = VendorStyle.DESC_T,
    aip: Annotated[bool, typer.Option(help="Also write an average intensity projection series.")] = False,
    artifact: Annotated[list[Artifact] | None, typer.Option(help="Inject a 4DCT artefact (repeatable).")] = None,
    compression: Annotated[Compression, typer.Option(help="Transfer syntax (all lossless).")] = Compression.NONE,
    amplitude_mm: Annotated[float, typer.Option(help="Superior-inferior tumour motion, peak to peak.")] = 15.0,
    amplitude_ap_mm: Annotated[float, typer.Option(help="Anterior-posterior tumour motion, peak to peak.")] = 4.0,
    amplitude_lr_mm: Annotated[float, typer.Option(help="Left-right tumour motion, peak to peak.")] = 2.0,
    tumour_diameter_mm: Annotated[float | None, typer.Option(help="Equivalent-sphere diameter (5-60 mm); default: "
                                                                  "drawn from the seed in 15-40 mm.")] = None,
    breathing: Annotated[Breathing, typer.Option(help="regular: cos^4 curve; irregular: end-exhale plateau, faster "
                                                      "inhale, turning points between phases.")]
    = Breathing.REGULAR,
) -> None:
    """Write a synthetic 4DCT phantom study (10 phases) and its exact truth masks. Synthetic, not patient data."""
    try:
        config = PhantomConfig(seed=seed, size=size, amplitude_si_mm=amplitude_mm, amplitude_ap_mm=amplitude_ap_mm,
                               amplitude_lr_mm=amplitude_lr_mm, tumour_diameter_mm=tumour_diameter_mm,
                               artifacts=tuple(artifact or ()), breathing=breathing)
        generated = generate_phantom(config)  # refuses a tumour too large or too mobile for the lung
    except ValueError as exc:
        raise fail(EXIT_USAGE, "invalid_phantom", str(exc)) from None
    empty_output(out_dir, force=None)
    files = write_phantom(generated, out_dir, vendor=vendor, aip=aip, compression=compression)
    console.print(f"wrote {len(files.paths)} DICOM files to {files.dicom_dir} ({vendor.value}, "
                  f"{compression.value}) and the truth to {files.truth_npz}", highlight=False)


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
        raise fail(EXIT_PATH, "not_found", f"no such folder: {study_dir}", as_json)
    try:
        index = scan_study(study_dir, study=study, reference_percent=reference_percent)
    except StudyError as exc:
        raise fail(EXIT_REFUSED, exc.code, str(exc), as_json) from None
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
    z_low, z_high = summary["reference"]["z_range_mm"]
    console.print(f"[bold]Grid[/]     {nx} x {ny} pixels x {nz} slices; spacing {dx:.4g} x {dy:.4g} mm, slices "
                  f"{dz:.4g} mm (z {z_low:g} to {z_high:g} mm); orientation {geometry['orientation']}; origin "
                  f"{geometry['origin_mm']} mm (LPS)")
    table = Table(title="4DCT phases" if index.is_4d else "CT volume (no respiratory phases)")
    for column in ("phase", "series", "description", "slices", "UID hash", "phase from"):
        table.add_column(column)
    for row in summary["phases"] + summary["derived"]:
        table.add_row(row["label"], str(row["series_number"] or "?"), escape(row["description"]), str(row["slices"]),
                      row["series_uid_hash"], row["phase_source"])
    console.print(table)
    reference = summary["reference"]
    console.print(f"[bold]Reference[/] {reference['label']} ({escape(reference['description'])}, "
                  f"{reference['series_uid_hash']})")
    files = summary["files"]
    console.print(f"[bold]Files[/]    {files['total']} files, {files['ct_instances']} CT images")
    for warning in index.warnings:
        console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
    logging.getLogger(__name__).info("inspected study %s", short_hash(attributes.study_instance_uid))


@app.command()
def contour(
    study_dir: Annotated[Path, typer.Argument(help="Folder of the study's DICOM files.")],
    masks_npz: Annotated[Path, typer.Argument(help="Masks: an .npz of bool arrays named after the structures, "
                                                   "(phase, z, y, x) or (z, y, x) on the study's grid, z ascending "
                                                   "in patient z, phases in percent order.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")],
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    mode: Annotated[OutputMode, typer.Option(help="Which RTSTRUCTs to write.")] = OutputMode.ALL,
    seg: Annotated[bool, typer.Option(help="Also write a DICOM SEG per phase.")] = True,
    projections: Annotated[bool, typer.Option(help="Write AIP/MIP series the study lacks; the reference "
                                                   "RTSTRUCT then goes on the new AIP.")] = False,
    force: Annotated[bool, typer.Option(help="Write into a non-empty output folder.")] = False,
) -> None:
    """Write RTSTRUCTs (and DICOM SEG) for a study from masks made elsewhere; exit 3 if study or masks are refused."""
    for path in (study_dir, masks_npz):
        if not path.exists():
            raise fail(EXIT_PATH, "not_found", f"no such file or folder: {path}")
    empty_output(out, force, study_dir)
    try:
        index = scan_study(study_dir)
        specs = load_template(template) if template else thoracic_template()
        masks = check_masks(index, load_masks_npz(masks_npz), specs)
        layout, provenance = OutputLayout(out), Provenance(model_identity="external masks (itvsam contour)")
        derived = write_derived(load_study(index), layout, provenance) if projections else ()
        written = write_outputs(masks, layout, provenance, mode=mode, seg=seg, derived=derived)
    except (StudyError, RTError) as exc:
        raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
    paths = written.files
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
