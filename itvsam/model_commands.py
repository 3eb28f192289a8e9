"""Model directory commands: ``convert`` (Meta's original ``sam3.pt`` → a model directory) and ``check-model``
(commissioning: load it as the worker does, time one slice). Torch and the model are imported by the command, so the
other groups start without them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dicomrt.rt_errors import RTError
from dicomrt.structures import load_template, thoracic_template
from itvsam.common import (
    EXIT_MODEL,
    EXIT_PATH,
    EXIT_REFUSED,
    EXIT_USAGE,
    Device,
    app,
    console,
    errors,
    fail,
    torch_threads,
)


@app.command()
def convert(
    sam3_pt: Annotated[Path, typer.Argument(help="Meta's original SAM 3 checkpoint (sam3.pt).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model directory (new or empty).")],
    tokenizer: Annotated[Path | None, typer.Option(help="Directory with the CLIP tokenizer files (vocab.json + "
                                                        "merges.txt or tokenizer.json), copied into the output.")]
    = None,
    config: Annotated[Path | None, typer.Option(help="Sam3Config JSON of the architecture (default: the released "
                                                     "SAM 3, Sam3Config()).")] = None,
) -> None:
    """Convert Meta's sam3.pt into a model directory for `run --model` (the image detector; tracker weights dropped)."""
    from model.convert import TOKENIZER_HINT, convert_checkpoint, load_config
    from model.sam3 import ModelLoadError

    if not sam3_pt.is_file():
        raise fail(EXIT_PATH, "not_found", f"no such checkpoint file: {sam3_pt}")
    if tokenizer is None:
        raise fail(EXIT_USAGE, "tokenizer_required", TOKENIZER_HINT)
    if not tokenizer.is_dir():
        raise fail(EXIT_PATH, "not_found", f"no such tokenizer directory: {tokenizer}")
    if config is not None and not config.is_file():
        raise fail(EXIT_PATH, "not_found", f"no such config file: {config}")
    if out.exists() and any(out.iterdir()):
        raise fail(EXIT_PATH, "output_exists", f"{out} is not empty: choose a new folder")
    try:
        architecture = load_config(config)
    except (ModelLoadError, TypeError, ValueError) as exc:
        raise fail(EXIT_USAGE, "invalid_config", str(exc)) from None
    try:
        with errors.status("converting") as status:
            result = convert_checkpoint(sam3_pt, out, tokenizer_dir=tokenizer, config=architecture,
                                        progress=lambda message: status.update(message))
    except ModelLoadError as exc:
        raise fail(EXIT_MODEL, "model_refused", str(exc)) from None
    dropped = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in result.dropped.items())
    console.print(f"converted {sam3_pt.name} into {out}: {result.parameters:,} parameters in {result.tensors} "
                  f"tensors from {result.source_keys} keys; dropped {sum(result.dropped.values())} keys that Sam3Model "
                  f"does not use ({dropped or 'none'}); identity {result.identity.short}", highlight=False)


@app.command(name="check-model")
def check_model_command(
    model: Annotated[Path, typer.Argument(help="SAM 3 model directory (official snapshot, converted or merged).")],
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter (peft) merged on load.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="Site template (YAML/JSON); default: thoracic.")] = None,
    device: Annotated[Device, typer.Option(help="Compute device (cuda: bf16, as the worker runs).")] = Device.CPU,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Commission a model: load it as the worker does, print its identity and figures, time one slice."""
    from model.check import check_model
    from model.sam3 import ModelLoadError

    torch_threads(threads)
    try:
        specs = load_template(template) if template else thoracic_template()
    except RTError as exc:
        raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
    try:
        with errors.status(f"loading {escape(str(model))} and timing one slice", spinner="dots"):
            found = check_model(model, specs, adapter_dir=adapter, device=device.value)
    except (ModelLoadError, OSError, ValueError) as exc:
        raise fail(EXIT_MODEL, "model_unavailable", str(exc)) from None
    identity = found.identity
    table = Table(title=f"SAM 3 model {identity.short}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    rows = [("label", identity.label or "(none)"), ("config sha256", identity.config_sha256),
            ("weights sha256", identity.weights_sha256), ("adapter sha256", identity.adapter_sha256 or "(none)"),
            ("parameters", f"{found.parameters:,}"), ("dtype / device", f"{found.dtype} on {found.device}"),
            ("input size", f"{found.image_size} px"), ("load", f"{found.load_s:.1f} s"),
            ("one slice", f"{found.slice_s * 1000:.0f} ms ({len(specs)} structures, 512 x 512)"),
            ("peak memory", f"{found.peak_memory_bytes / (1 << 30):.2f} GiB ({found.memory_measure})")]
    thresholds = identity.thresholds or {}
    rows += [(f"threshold {name}", f"{thresholds[name]:g}" if name in thresholds else "0.5 (not calibrated)")
             for name in (s.name for s in specs)]
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)
