"""Engine commands (SAM 3): ``run``, ``merge``, ``train``, ``eval``, ``demo``. Torch and the model are imported by
the command that needs them, so the other groups start without them."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dicomrt.errors import StudyError
from dicomrt.rt_errors import RTError
from dicomrt.structures import load_template, thoracic_template
from itvsam.common import (
    EXIT_MODEL,
    EXIT_PATH,
    EXIT_REFUSED,
    EXIT_USAGE,
    Device,
    app,
    clear,
    console,
    empty_output,
    errors,
    fail,
    job_progress,
    loading_model,
    read_options,
    torch_threads,
)


@app.command()
def run(
    study_dir: Annotated[Path, typer.Argument(help="Folder of the 4DCT's DICOM files.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")],
    model: Annotated[Path, typer.Option(help="SAM 3 snapshot directory (official layout or merged).")],
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter (peft) merged on load.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    options: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                 help="Job options: a JSON file (as for the service: mode, seg, "
                                                      "threshold, temporal, itv_margin_mm, ...).")] = None,
    device: Annotated[Device, typer.Option(help="Compute device (cuda: bf16).")] = Device.CPU,
    force: Annotated[bool, typer.Option(help="Replace the contents of a non-empty output folder.")] = False,
) -> None:
    """Contour a 4DCT: SAM 3 per phase, phase-coherent refinement, ITV; writes RTSTRUCTs, SEG, summary and QA."""
    from model.sam3 import ModelLoadError
    from workers.pipeline import load_engine, run_job

    if not study_dir.exists():
        raise fail(EXIT_PATH, "not_found", f"no such folder: {study_dir}")
    job_options = read_options(options)
    try:
        if template:
            job_options = job_options.model_copy(update={"template": load_template(template)})
    except RTError as exc:
        raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
    empty_output(out, force, study_dir)
    if force:
        clear(out)
    try:
        with loading_model(model):
            engine = load_engine(model, adapter, device=device.value)
    except (ModelLoadError, OSError) as exc:
        raise fail(EXIT_MODEL, "model_unavailable", str(exc)) from None
    with job_progress("reading") as show:
        try:
            result = run_job(study_dir, out, engine, job_options, progress=show)
        except (StudyError, RTError) as exc:
            raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
    timings = result.timings
    console.print(f"wrote {len(result.outputs.rtstructs)} RTSTRUCT(s), {len(result.outputs.segs)} SEG, "
                  f"report.png and summary.json to {out} in {timings['wall_s']:.1f} s (model "
                  f"{timings['model_s']:.1f} s)", highlight=False)
    for structure in result.structures:
        volumes = structure.motion.volumes_ml
        lr, ap, si = (round(float(v), 3) for v in structure.motion.amplitude_mm)
        console.print(f"  {structure.spec.name}: volume {volumes.min():.1f}-{volumes.max():.1f} ml, "
                      f"motion LR {lr} AP {ap} SI {si} mm", highlight=False)
    for flag in result.flags():
        console.print(f"[yellow]check[/]: {escape(flag)}", highlight=False)


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
        raise fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder")
    try:
        identity = merge_adapter(base, adapter, out)
    except ModelLoadError as exc:
        raise fail(EXIT_MODEL, "model_unavailable", str(exc)) from None
    console.print(f"merged into {out}: identity {identity.short}", highlight=False)


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
    micro_batch: Annotated[int | None, typer.Option(min=1, help="Slices per forward pass, gradients accumulated "
                                                                "over the step (default: 1 in LoRA mode, all in full "
                                                                "mode; halved on CUDA out of memory).")] = None,
    checkpointing: Annotated[bool, typer.Option(help="Activation checkpointing of the ViT layers.")] = True,
    cache_text: Annotated[bool, typer.Option(help="LoRA: encode the prompts once per run (text encoder frozen).")]
    = True,
    bf16: Annotated[bool | None, typer.Option(help="bf16 autocast (default: on CUDA only).")] = None,
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

    torch_threads(threads)
    if (model is None) == (not from_scratch):
        raise fail(EXIT_USAGE, "usage", "give either --model DIR or --from-scratch")
    try:
        specs = load_template(template) if template else thoracic_template()
        source = TrainingData(data=tuple(data or ()), val_data=tuple(val_data or ()),
                              phantom_seeds=parse_seeds(phantom_seeds), val_seeds=parse_seeds(val_seeds),
                              mapping=NameMapping.from_file(mapping) if mapping else NameMapping())
        if not source.data and not source.phantom_seeds:
            raise ValueError("no training data: give --data and/or --phantom-seeds")
        settings = TrainSettings(
            mode=mode.value, steps=steps, epoch_steps=epoch_steps, slices=slices, lr=lr, seed=seed, label=label,
            micro_batch=micro_batch, checkpointing=checkpointing, cache_text=cache_text, bf16=bf16,
            lora=LoraSettings(rank=rank, alpha=2.0 * rank, attention=tuple(t for t in targets.split(",") if t),
                              mlp=mlp),
            mining=MiningSettings(structure_weights=_structure_weights(structure_weight),
                                  negative_fraction=negative_fraction,
                                  **({} if hard_negatives else {"negatives": False, "companions": False,
                                                                "online": False})),
            loss=LossSettings(balance=loss_balance, recall_beta=recall_beta),
            augment=AugmentSettings(enabled=augment))
    except (ValueError, RTError) as exc:
        raise fail(EXIT_USAGE, "invalid_training", str(exc)) from None
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
            raise fail(EXIT_REFUSED, getattr(exc, "code", "invalid_data"), str(exc)) from None
        except (ModelLoadError, FileNotFoundError) as exc:
            raise fail(EXIT_MODEL, "model_unavailable", str(exc)) from None
        except FileExistsError as exc:
            raise fail(EXIT_PATH, "output_exists", str(exc)) from None
        except ValueError as exc:  # e.g. a validation seed that is also a training seed, a resize in LoRA mode
            raise fail(EXIT_USAGE, "invalid_training", str(exc)) from None
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

    torch_threads(threads)
    try:
        specs = load_template(template) if template else thoracic_template()
        volumes = load_annotated(data, specs, NameMapping.from_file(mapping) if mapping else NameMapping())
    except (AnnotationError, StudyError, RTError) as exc:
        raise fail(EXIT_REFUSED, getattr(exc, "code", "invalid_data"), str(exc)) from None
    try:
        with loading_model(model):
            engine = load_engine(model, adapter, device=device.value)
    except (ModelLoadError, OSError) as exc:
        raise fail(EXIT_MODEL, "model_unavailable", str(exc)) from None
    thresholds = thresholds_for([s.name for s in specs], engine.identity.thresholds)
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
        meta = {"model": engine.identity.to_dict(), "data": [str(d) for d in data], "refine": refine,
                "thresholds": thresholds}
        csv_path, json_path = write_report(rows, out, meta)
        console.print(f"wrote {csv_path} and {json_path}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")] = Path("out/demo"),
    seed: Annotated[int, typer.Option(min=0, help="Phantom seed (never one the phantom model was trained on).")] = 7,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """The main job on a phantom 4DCT with the shipped phantom model; prints Dice/HD95 against the phantom's truth."""
    from itvsam.demo import run_demo

    torch_threads(threads)
    empty_output(out, force=None)
    with job_progress("phantom") as show:
        try:
            result = run_demo(out, seed=seed, progress=show)
        except ValueError as exc:
            raise fail(EXIT_USAGE, "invalid_seed", str(exc)) from None
    model = result.job.identity
    console.print(f"[bold]demo[/]: phantom seed {seed} (10 phases, artefacts), model {model.short} "
                  f"({escape(model.label or 'unlabelled')}); thresholds "
                  + ", ".join(f"{r.spec.name} {r.threshold:g}" for r in result.job.structures), highlight=False)
    table = Table(title="contours delivered (RTSTRUCT read back) vs phantom truth, mean over phases")
    for column in ("structure", "Dice", "HD95 mm"):
        table.add_column(column, justify="left" if column == "structure" else "right")
    for name, values in result.structures.items():
        table.add_row(name, f"{values['dice']:.3f}", f"{values['hd95_mm']:.1f}")
    console.print(table)
    console.print(f"outputs in {out / 'result'}, metrics in {out / 'demo_metrics.json'}; {result.seconds:.0f} s",
                  highlight=False)



