"""The ``itvsam`` command line. Entry point only: it configures logging and output, the work lives in the packages.

Exit codes: 0 success; 2 usage error; 3 an input (study, masks, template) is refused (the message names the problem);
4 a path does not exist, or an output folder is not empty; 5 the model cannot be loaded; 6 a submitted job failed or
was cancelled; 7 the service cannot be reached or refused the request (authentication, limits).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dicomrt.derived import write_projections
from dicomrt.errors import StudyError
from dicomrt.identifiers import short_hash
from dicomrt.phantom import (
    Artifact,
    Compression,
    PhantomConfig,
    PhantomSize,
    VendorStyle,
    generate_phantom,
    write_phantom,
)
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance
from dicomrt.reader import load_study, scan_study
from dicomrt.rt_errors import RTError
from dicomrt.rt_outputs import OutputMode, check_masks, load_masks_npz, write_rtstructs
from dicomrt.seg import write_segs
from dicomrt.structures import load_template, thoracic_template
from dicomrt.study import StudyIndex, index_summary

EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_PATH = 4
EXIT_MODEL = 5
EXIT_JOB_FAILED = 6
EXIT_SERVICE = 7

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
) -> None:
    """Write a synthetic 4DCT phantom study (10 phases) and its exact truth masks. Synthetic, not patient data."""
    try:
        config = PhantomConfig(seed=seed, size=size, amplitude_si_mm=amplitude_mm, artifacts=tuple(artifact or ()))
    except ValueError as exc:
        raise _fail(EXIT_USAGE, "invalid_phantom", str(exc), False) from None
    _empty_output(out_dir, force=None)
    files = write_phantom(generate_phantom(config), out_dir, vendor=vendor, aip=aip, compression=compression)
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


def _empty_output(out: Path, force: bool | None, source: Path | None = None) -> None:
    """Refuse to write into a folder that already holds files, unless ``force`` (None: the command has no --force),
    and refuse an output folder that is, holds or lies inside the input ``source`` (inputs are never touched)."""
    if source is not None:
        o, i = out.resolve(), source.resolve()
        if o == i or i in o.parents or o in i.parents:
            raise _fail(EXIT_PATH, "output_overlaps_input", f"output folder {out} overlaps the input {source}", False)
    if out.exists() and any(out.iterdir()) and not force:
        hint = "" if force is None else " or pass --force"
        raise _fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder{hint}", False)
    out.mkdir(parents=True, exist_ok=True)


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
            raise _fail(EXIT_PATH, "not_found", f"no such file or folder: {path}", False)
    _empty_output(out, force, study_dir)
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


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


@app.command()
def run(
    study_dir: Annotated[Path, typer.Argument(help="Folder of the 4DCT's DICOM files.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")],
    model: Annotated[Path, typer.Option(help="SAM 3 snapshot directory (official layout or merged).")],
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter (peft) merged on load.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    device: Annotated[Device, typer.Option(help="Compute device (cuda: bf16).")] = Device.CPU,
    force: Annotated[bool, typer.Option(help="Replace the contents of a non-empty output folder.")] = False,
) -> None:
    """Contour a 4DCT: SAM 3 per phase, phase-coherent refinement, ITV; writes RTSTRUCTs, SEG, summary and QA."""
    from model.sam3 import ModelLoadError
    from workers.pipeline import JobOptions, load_engine, run_job

    if not study_dir.exists():
        raise _fail(EXIT_PATH, "not_found", f"no such folder: {study_dir}", False)
    _empty_output(out, force, study_dir)
    if force:
        _clear(out)
    try:
        options = JobOptions(template=load_template(template)) if template else JobOptions()
    except RTError as exc:
        raise _fail(EXIT_REFUSED, exc.code, str(exc), False) from None
    try:
        engine = load_engine(model, adapter, device=device.value)
    except (ModelLoadError, OSError) as exc:
        raise _fail(EXIT_MODEL, "model_unavailable", str(exc), False) from None
    with _job_progress("reading") as show:
        try:
            summary = run_job(study_dir, out, engine, options, progress=show)
        except (StudyError, RTError) as exc:
            raise _fail(EXIT_REFUSED, exc.code, str(exc), False) from None
    timings = summary["timings"]
    console.print(f"wrote {len(summary['outputs']['rtstruct'])} RTSTRUCT(s), {len(summary['outputs']['seg'])} SEG, "
                  f"report.png and summary.json to {out} in {timings['total_s']:.1f} s (model "
                  f"{timings['model_s']:.1f} s)", highlight=False)
    for name, structure in summary["structures"].items():
        amplitude = structure["amplitude_mm"]
        console.print(f"  {name}: volume {min(structure['volumes_ml']):.1f}-{max(structure['volumes_ml']):.1f} ml, "
                      f"motion LR {amplitude['x']} AP {amplitude['y']} SI {amplitude['z']} mm", highlight=False)
    for flag in summary["flags"]:
        console.print(f"[yellow]check[/]: {escape(flag)}", highlight=False)


@contextmanager
def _job_progress(first: str) -> Iterator[Callable[[Any], None]]:
    """A progress bar for a pipeline run; yields the callback that takes ``workers.pipeline.Progress``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors) as bar:
        task = bar.add_task(first, total=1.0)
        yield lambda progress: bar.update(task, completed=progress.fraction, description=progress.message[:28])


def _clear(out: Path) -> None:
    """Remove what a previous run left in ``out`` (only with --force)."""
    for path in out.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@app.command()
def merge(
    base: Annotated[Path, typer.Option(help="SAM 3 snapshot directory.")],
    adapter: Annotated[Path, typer.Option(help="LoRA adapter directory (peft format).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory for the merged weights (new).")],
) -> None:
    """Merge a LoRA adapter into SAM 3 and write a self-contained checkpoint for workers."""
    from model.sam3 import ModelLoadError
    from model.sam3 import merge as merge_adapter

    if out.exists() and any(out.iterdir()):
        raise _fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder", False)
    try:
        identity = merge_adapter(base, adapter, out)
    except ModelLoadError as exc:
        raise _fail(EXIT_MODEL, "model_unavailable", str(exc), False) from None
    console.print(f"merged into {out}: identity {identity.short}", highlight=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Gateway processes.")] = 1,
) -> None:
    """Run the HTTP gateway (FastAPI under uvicorn); configured by ITVSAM_* environment variables."""
    import uvicorn

    uvicorn.run("service.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                proxy_headers=True, timeout_keep_alive=30, log_level="info")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes (one per GPU).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (a process per job slot) or solo.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a GPU worker: takes jobs from the queue, the model loaded once per process (ITVSAM_MODEL_DIR)."""
    from pydantic import ValidationError

    from service.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise _fail(EXIT_USAGE, "invalid_settings", str(exc), False) from None
    if settings.model_dir is None or not (settings.model_dir / "config.json").is_file():
        raise _fail(EXIT_MODEL, "model_unavailable", f"ITVSAM_MODEL_DIR must name a SAM 3 snapshot folder (with "
                                                     f"config.json), got {settings.model_dir}", False)
    from workers.celery_app import celery_app

    celery_app.worker_main(["worker", "--queues", settings.queue, "--concurrency", str(concurrency), "--pool", pool,
                            "--loglevel", loglevel, "--prefetch-multiplier", "1", "--without-mingle",
                            "--without-gossip"])


@app.command()
def submit(
    source: Annotated[Path, typer.Argument(help="The study: a folder of DICOM files or a zip of them.")],
    url: Annotated[str, typer.Option(envvar="ITVSAM_URL", help="The gateway, e.g. http://host:8000.")],
    token: Annotated[str | None, typer.Option(envvar="ITVSAM_TOKEN", help="API key.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job and download its result zip.")] = False,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Result zip (default: itvsam-ID.zip).")] = None,
    options: Annotated[Path | None, typer.Option(help="Job options: a JSON file.")] = None,
    force: Annotated[bool, typer.Option(help="A new job even if the same study already has one.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 3600.0,
) -> None:
    """Send a study to the itvsam service; with --wait, show its progress and download the result."""
    import tempfile

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from service.client import Client, ServiceError, zip_study

    if not source.exists():
        raise _fail(EXIT_PATH, "not_found", f"no such file or folder: {source}", False)
    job_options = json.loads(options.read_text()) if options else None
    with tempfile.TemporaryDirectory(prefix="itvsam-submit-") as tmp, Client(url, token) as client:
        try:
            archive = zip_study(source, Path(tmp) / "study.zip")
        except ValueError as exc:
            raise _fail(EXIT_USAGE, "not_a_study", str(exc), False) from None
        columns = (TextColumn("{task.description:<30}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns, console=errors, transient=True) as bar:
                task = bar.add_task("uploading", total=archive.stat().st_size)
                created = client.submit_zip(archive, job_options, force,
                                            on_bytes=lambda n: bar.advance(task, n))
        except ServiceError as exc:
            code = EXIT_REFUSED if exc.status in (400, 409, 413, 415, 422) else EXIT_SERVICE
            raise _fail(code, exc.code, str(exc), False) from None
        job_id = created["id"]
        console.print(f"job {job_id} {'created' if created['created'] else 'exists'}: {created['url']}",
                      highlight=False)
        if not wait:
            return
        try:
            job = _follow(client, job_id, timeout)
            if job["state"] != "succeeded":
                error = job.get("error") or {"code": job["state"], "message": f"the job was {job['state']}"}
                raise _fail(EXIT_JOB_FAILED, error["code"], error["message"], False)
            path = client.download(job_id, out or Path(f"itvsam-{job_id}.zip"))
        except ServiceError as exc:
            raise _fail(EXIT_SERVICE, exc.code, str(exc), False) from None
    console.print(f"job {job_id} succeeded in {job['timings'].get('run_s', 0):.1f} s: {path}", highlight=False)


def _follow(client: Any, job_id: str, timeout: float) -> dict:
    """Poll the job with a progress bar (stage, phase i/n) until it is finished."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<30}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("queued", total=1.0)

        def show(job: dict) -> None:
            phase = f" {job['phase']}/{job['phases']}" if job.get("phase") else ""
            bar.update(task, completed=job["fraction"], description=f"{job['state']}: {job['stage']}{phase}")

        return client.wait(job_id, show, timeout_s=timeout)


@app.command()
def apikey() -> None:
    """Make a new API key: give the key to the client, add its hash to ITVSAM_API_KEY_HASHES of the gateway."""
    import secrets

    from service.settings import hash_api_key

    key = secrets.token_urlsafe(32)
    console.print(f"key:  {key}\nhash: {hash_api_key(key)}", highlight=False)


# --- training, evaluation and the demo (model/training.py, model/evaluate.py, workers/demo.py) ----------------------


class TrainModeOption(StrEnum):
    LORA = "lora"
    FULL = "full"


def _command_line(context: Any) -> str:
    """The command as it could be typed again, from the parsed options (recorded with a training result)."""
    words = ["itvsam", context.info_name]
    for name, value in context.params.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list | tuple):
            words += [f"{option} {item}" for item in value]
        elif value is not None:
            text = str(getattr(value, "value", value))
            words.append(f"{option} {json.dumps(text) if ' ' in text else text}")
    return " ".join(words)


def _structure_weights(items: list[str] | None) -> tuple[tuple[str, float], ...]:
    """``["GTV=3"]`` → (("GTV", 3.0),); None → the default (GTV twice the share of the other structures)."""
    if not items:
        return (("GTV", 2.0),)
    weights = []
    for item in items:
        name, _, value = item.partition("=")
        try:
            weights.append((name.strip(), float(value)))
        except ValueError:
            raise ValueError(f"--structure-weight must look like GTV=2, got {item!r}") from None
    return tuple(weights)


def _torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: best/ (adapter or model), checkpoint/.")],
    data: Annotated[list[Path] | None, typer.Option(help="Folder of annotated studies (CT + RTSTRUCT, or phantom "
                                                         "CT + truth.npz); repeatable.")] = None,
    val_data: Annotated[list[Path] | None, typer.Option(help="Held-out annotated studies for validation.")] = None,
    phantom_seeds: Annotated[str | None, typer.Option(help="Train on in-memory phantoms, e.g. 100-107.")] = None,
    val_seeds: Annotated[str | None, typer.Option(help="Validate on in-memory phantoms, e.g. 200.")] = None,
    model: Annotated[Path | None, typer.Option(help="Starting SAM 3 snapshot (LoRA base).")] = None,
    from_scratch: Annotated[bool, typer.Option(help="Start from an initialised tiny-architecture model.")] = False,
    image_size: Annotated[int | None, typer.Option(help="Input size (multiple of 14) of a model trained from scratch "
                                                        "(default 224), or a new one for --model in full mode.")]
    = None,
    mode: Annotated[TrainModeOption, typer.Option(help="lora: LoRA on the ViT attention; full: every weight.")]
    = TrainModeOption.LORA,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    targets: Annotated[str, typer.Option(help="LoRA attention projections, comma-separated.")] = "q_proj,k_proj,v_proj,"
                                                                                                  "o_proj",
    mlp: Annotated[bool, typer.Option(help="Also LoRA on the ViT MLP.")] = False,
    steps: Annotated[int, typer.Option(min=1)] = 1000,
    epoch_steps: Annotated[int, typer.Option(min=1, help="Steps between mining re-rank, validation, checkpoint.")]
    = 100,
    slices: Annotated[int, typer.Option(min=1, help="Slices per step (every structure decoded on each).")] = 4,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Sampling, augmentation and initialisation seed.")] = 0,
    hard_negatives: Annotated[bool, typer.Option(help="Negatives (absent / other structures' slices) and online "
                                                      "hard mining.")] = True,
    negative_fraction: Annotated[float, typer.Option(help="Share of the drawing mass on negatives (hard negative "
                                                          "mining).")] = 0.35,
    augment: Annotated[bool, typer.Option(help="CT augmentation (rotation, scale, HU jitter, noise).")] = True,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    mapping: Annotated[Path | None, typer.Option(help="Structure name mapping (YAML: map, ignore).")] = None,
    label: Annotated[str | None, typer.Option(help="Label of a fully trained model (itvsam_model.json).")] = None,
    loss_balance: Annotated[float, typer.Option(help="Share of the class-balanced pixel loss (0-1).")] = 0.5,
    recall_beta: Annotated[float, typer.Option(help="Tversky β of the overlap loss (0.5: Dice; >0.5 favours "
                                                    "recall).")] = 0.5,
    structure_weight: Annotated[list[str] | None, typer.Option(help="Share of a structure's positives, NAME=W "
                                                                    "(repeatable; default GTV=2).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[Device, typer.Option(help="Compute device (cuda: bf16 autocast).")] = Device.CPU,
) -> None:
    """Train SAM 3 on annotated CT (LoRA, or full training from scratch) with hard negative mining and validation."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from model.datasets import AnnotationError, NameMapping
    from model.lora import LoraSettings
    from model.losses import LossSettings
    from model.mining import MiningSettings
    from model.recipes import TrainingData, parse_seeds, train_model
    from model.sam3 import ModelLoadError
    from model.samples import AugmentSettings
    from model.training import TrainSettings

    _torch_threads(threads)
    if (model is None) == (not from_scratch):
        raise _fail(EXIT_USAGE, "usage", "give either --model DIR or --from-scratch", False)
    try:
        specs = load_template(template) if template else thoracic_template()
        source = TrainingData(data=tuple(data or ()), val_data=tuple(val_data or ()),
                              phantom_seeds=parse_seeds(phantom_seeds), val_seeds=parse_seeds(val_seeds),
                              mapping=NameMapping.from_file(mapping) if mapping else NameMapping())
        if not source.data and not source.phantom_seeds:
            raise ValueError("no training data: give --data and/or --phantom-seeds")
        settings = TrainSettings(
            mode=mode.value, steps=steps, epoch_steps=epoch_steps, slices=slices, lr=lr, seed=seed, label=label,
            lora=LoraSettings(rank=rank, alpha=2.0 * rank, attention=tuple(t for t in targets.split(",") if t),
                              mlp=mlp),
            mining=MiningSettings(structure_weights=_structure_weights(structure_weight),
                                  negative_fraction=negative_fraction,
                                  **({} if hard_negatives else {"negatives": False, "companions": False,
                                                                "online": False})),
            loss=LossSettings(balance=loss_balance, recall_beta=recall_beta),
            augment=AugmentSettings(enabled=augment))
    except (ValueError, RTError) as exc:
        raise _fail(EXIT_USAGE, "invalid_training", str(exc), False) from None
    columns = (TextColumn("{task.description:<44}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors) as bar:
        task = bar.add_task("loading data", total=steps)
        shown = {"val": ""}

        def show(p) -> None:
            if p.validation:
                shown["val"] = f" val Dice {p.validation['mean']['dice']:.3f}"
            bar.update(task, completed=p.step, description=f"epoch {p.epoch} loss {p.mean_loss:.3f}{shown['val']}")

        try:
            result = train_model(out, source, specs, settings, model_dir=model, image_size=image_size,
                                 init_seed=seed, resume=resume, device=device.value, progress=show,
                                 command=_command_line(ctx))
        except (AnnotationError, StudyError, RTError) as exc:
            raise _fail(EXIT_REFUSED, getattr(exc, "code", "invalid_data"), str(exc), False) from None
        except (ModelLoadError, FileNotFoundError) as exc:
            raise _fail(EXIT_MODEL, "model_unavailable", str(exc), False) from None
        except FileExistsError as exc:
            raise _fail(EXIT_PATH, "output_exists", str(exc), False) from None
        except ValueError as exc:  # e.g. a validation seed that is also a training seed, a resize in LoRA mode
            raise _fail(EXIT_USAGE, "invalid_training", str(exc), False) from None
    metrics = result.best_metrics
    console.print(f"best (epoch {result.best_epoch}) saved to {result.best_dir} after {result.seconds:.0f} s",
                  highlight=False)
    for name, values in metrics.items():
        if name != "mean":
            console.print(f"  {name}: Dice {values['dice']:.3f}, HD95 {values['hd95_mm']:.1f} mm at 0.5; calibrated "
                          f"threshold {values['threshold']:g} (Dice {values['dice_calibrated']:.3f})", highlight=False)


@app.command(name="eval")
def eval_command(
    data: Annotated[list[Path], typer.Option(help="Folder of annotated studies (CT + RTSTRUCT, or phantom).")],
    model: Annotated[Path, typer.Option(help="SAM 3 snapshot directory.")],
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter (peft) merged on load.")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Folder for eval.csv and eval.json.")] = None,
    refine: Annotated[bool, typer.Option(help="Refine like the pipeline (temporal filter, connectivity); else "
                                              "the thresholded masks only.")] = True,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    mapping: Annotated[Path | None, typer.Option(help="Structure name mapping (YAML: map, ignore).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[Device, typer.Option(help="Compute device.")] = Device.CPU,
) -> None:
    """Score a model on annotated studies: Dice, HD95, volume error, false-positive slices per structure and phase."""
    from model.calibration import thresholds_for
    from model.datasets import AnnotationError, NameMapping, load_annotated
    from model.evaluate import evaluate, summarise, write_report
    from model.sam3 import ModelLoadError
    from workers.pipeline import load_engine

    _torch_threads(threads)
    try:
        specs = load_template(template) if template else thoracic_template()
        volumes = load_annotated(data, specs, NameMapping.from_file(mapping) if mapping else NameMapping())
    except (AnnotationError, StudyError, RTError) as exc:
        raise _fail(EXIT_REFUSED, getattr(exc, "code", "invalid_data"), str(exc), False) from None
    try:
        engine = load_engine(model, adapter, device=device.value)
    except (ModelLoadError, OSError) as exc:
        raise _fail(EXIT_MODEL, "model_unavailable", str(exc), False) from None
    thresholds = thresholds_for([s.name for s in specs], engine.identity.get("thresholds"))
    rows = evaluate(engine.predictor, volumes, specs, refine=refine, thresholds=thresholds)
    shown = ", ".join(f"{name} {value:g}" for name, value in thresholds.items())
    table = Table(title=f"{len({r.study for r in rows})} stud(ies), thresholds {shown}, "
                        f"{'refined' if refine else 'not refined'}")
    for column in ("study", "structure", "phase", "Dice", "HD95 mm", "volume ml", "truth ml", "vol. err %", "FP sl."):
        table.add_column(column, justify="left" if column in ("study", "structure") else "right")
    for r in rows:
        table.add_row(escape(r.study), r.structure, r.phase, f"{r.dice:.3f}", f"{r.hd95_mm:.1f}", f"{r.volume_ml:.1f}",
                      f"{r.truth_ml:.1f}", f"{r.volume_error_pct:+.1f}", str(r.fp_slices))
    console.print(table)
    for s in summarise(rows):
        console.print(f"  {s['structure']}: Dice {s['dice']:.3f}, HD95 {s['hd95_mm']:.1f} mm, |volume error| "
                      f"{s['abs_volume_error_pct']:.1f} %, false-positive slices {s['fp_slices']} ({s['n']} rows)",
                      highlight=False)
    if out is not None:
        csv_path, json_path = write_report(rows, out, {"model": engine.identity, "data": [str(d) for d in data],
                                                       "refine": refine, "thresholds": thresholds})
        console.print(f"wrote {csv_path} and {json_path}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")] = Path("out/demo"),
    seed: Annotated[int, typer.Option(min=0, help="Phantom seed (never one the phantom model was trained on).")] = 7,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """The main job on a phantom 4DCT with the shipped phantom model; prints Dice/HD95 against the phantom's truth."""
    from workers.demo import run_demo

    _torch_threads(threads)
    _empty_output(out, force=None)
    with _job_progress("phantom") as show:
        try:
            result = run_demo(out, seed=seed, progress=show)
        except ValueError as exc:
            raise _fail(EXIT_USAGE, "invalid_seed", str(exc), False) from None
    model = result.summary["model"]
    console.print(f"[bold]demo[/]: phantom seed {seed} (10 phases, artefacts), model {model['short']} "
                  f"({escape(str(model.get('label') or 'unlabelled'))}); thresholds "
                  + ", ".join(f"{name} {s['threshold']:g}" for name, s in result.summary["structures"].items()),
                  highlight=False)
    table = Table(title="contours delivered (RTSTRUCT read back) vs phantom truth, mean over phases")
    for column in ("structure", "Dice", "HD95 mm"):
        table.add_column(column, justify="left" if column == "structure" else "right")
    for name, values in result.structures.items():
        table.add_row(name, f"{values['dice']:.3f}", f"{values['hd95_mm']:.1f}")
    console.print(table)
    console.print(f"outputs in {out / 'result'}, metrics in {out / 'demo_metrics.json'}; {result.seconds:.0f} s",
                  highlight=False)


# --- DICOM networking: the listener, the storescp hook, destinations (service/dicom) ---------------------------------


def _service_settings() -> Any:
    from pydantic import ValidationError

    from service.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        raise _fail(EXIT_USAGE, "invalid_settings", str(exc), False) from None


@app.command()
def scp(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default ITVSAM_SCP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default ITVSAM_SCP_PORT).")] = None,
) -> None:
    """Run the DICOM listener: C-STORE of CT from allowed peers, a job per complete 4DCT, results sent back to the
    configured destinations; configured by ITVSAM_* environment variables. Stops on SIGTERM or Ctrl-C."""
    import signal
    import threading

    from service.broker import celery_queue
    from service.dicom.scp import start_listener

    settings = _service_settings()
    changes = {k: v for k, v in (("scp_host", host), ("scp_port", port)) if v is not None}
    settings = settings.model_copy(update=changes) if changes else settings
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        listener = start_listener(settings, celery_queue(settings))
    except OSError as exc:
        raise _fail(EXIT_SERVICE, "cannot_listen", f"cannot listen on {settings.scp_host}:{settings.scp_port}: "
                                                   f"{exc}", False) from None
    console.print(f"listening as {settings.scp_ae_title} on {settings.scp_host}:{listener.port}", highlight=False)
    stop.wait()
    listener.shutdown()


@app.command(name="submit-dir")
def submit_dir(
    folder: Annotated[Path, typer.Argument(help="A study's folder, e.g. storescp's #p.")],
    url: Annotated[str | None, typer.Option(envvar="ITVSAM_URL", help="The gateway, e.g. http://host:8000.")] = None,
    token: Annotated[str | None, typer.Option(envvar="ITVSAM_TOKEN", help="API key.")] = None,
    direct: Annotated[bool, typer.Option(envvar="ITVSAM_SUBMIT_DIRECT", help="Put the job into the store and the "
                                                                            "queue directly, not through the gateway.")]
    = False,
    calling_ae: Annotated[str | None, typer.Option(help="The AE title that sent the study (storescp's #a): with "
                                                        "--direct, results go to the destinations serving it.")]
    = None,
    options: Annotated[Path | None, typer.Option(help="Job options: a JSON file.")] = None,
    remove: Annotated[bool, typer.Option(help="Remove the folder once the job is made.")] = False,
) -> None:
    """Submit a folder of DICOM files as one study (dcmtk's storescp --exec-on-eostudy hook); exit 3 with the reason
    if the study is refused."""
    import tempfile

    if not folder.is_dir():
        raise _fail(EXIT_PATH, "not_found", f"no such folder: {folder}", False)
    job_options = json.loads(options.read_text()) if options else {}
    if direct:
        job_id = _submit_direct(folder, job_options, calling_ae)
    else:
        from service.client import Client, ServiceError, zip_study

        if not url:
            raise _fail(EXIT_USAGE, "usage", "give --url (ITVSAM_URL) of the gateway, or --direct", False)
        with tempfile.TemporaryDirectory(prefix="itvsam-submit-") as tmp, Client(url, token) as client:
            try:
                created = client.submit_zip(zip_study(folder, Path(tmp) / "study.zip"), job_options or None)
            except ServiceError as exc:
                code = EXIT_REFUSED if exc.status in (400, 409, 413, 415, 422) else EXIT_SERVICE
                raise _fail(code, exc.code, str(exc), False) from None
        job_id = created["id"]
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
    console.print(f"job {job_id} for {folder}", highlight=False)


def _submit_direct(folder: Path, options: dict[str, Any], calling_ae: str | None) -> str:
    from service import intake
    from service.broker import celery_queue
    from service.dicom.delivery import plan_deliveries
    from service.jobstore import JobStore
    from service.uploads import UploadError, UploadLimits, receive_folder

    settings = _service_settings()
    store = JobStore(settings.store_dir)
    problem = intake.disk_problem(store, settings)
    if problem is not None:
        raise _fail(EXIT_SERVICE, "insufficient_storage", problem, False)
    with store.staging_dir() as staging:
        try:
            received = receive_folder(folder, staging, UploadLimits.from_settings(settings))
            manifest, _ = intake.accept_study(received, "directory", options, False, store, celery_queue(settings),
                                              calling_ae=calling_ae,
                                              deliveries=plan_deliveries(settings.destinations, calling_ae))
        except UploadError as exc:
            raise _fail(EXIT_REFUSED, exc.code, str(exc), False) from None
        except StudyError as exc:
            raise _fail(EXIT_REFUSED, exc.code, str(exc), False) from None
    return manifest.id


@app.command(name="echo")
def echo_command(
    destination: Annotated[str, typer.Argument(help="A configured destination's name, or AE@HOST:PORT.")],
) -> None:
    """C-ECHO a destination (is the planning system reachable, and does it accept our AE title?)."""
    import time

    from service.dicom.net import DicomNetworkError, echo
    from service.dicom.peers import find_destination

    settings = _service_settings()
    try:
        target = find_destination(settings.destinations, destination)
    except ValueError as exc:
        raise _fail(EXIT_USAGE, "unknown_destination", str(exc), False) from None
    started = time.perf_counter()
    try:
        echo(target, settings)
    except DicomNetworkError as exc:
        raise _fail(EXIT_SERVICE, "echo_failed", str(exc), False) from None
    console.print(f"{target.name}: C-ECHO to {target.ae_title}@{target.host}:{target.port} ok in "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms", highlight=False)
