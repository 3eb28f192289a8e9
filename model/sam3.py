"""Loading SAM 3 from a local directory, applying and merging a LoRA adapter, and the model identity.

A model directory has the official ``facebook/sam3`` snapshot layout: ``config.json`` (a ``sam3_video`` config with a
``detector_config``, or a plain ``sam3`` config as our ``merge`` writes), ``model.safetensors`` (or a sharded
``model.safetensors.index.json``; keys ``detector_model.*`` plus ignored ``tracker_*`` in the official file, bare keys
in ours), the CLIP tokenizer (``vocab.json`` + ``merges.txt`` or ``tokenizer.json``) and ``processor_config.json``.
Only safetensors are read (no pickle), only from disk (``local_files_only``). A checkpoint that leaves any parameter
missing, or brings an unexpected or mis-shaped one, is refused.

A model directory may also hold ``itvsam_model.json`` with a ``label`` (e.g. that it is a phantom model, not for
patients); the label is part of the identity recorded with every result and is carried over by ``merge``. A model or
adapter directory may hold ``itvsam_calibration.json``, per-structure thresholds (``model.calibration``): part of the
identity too, and carried from the adapter into the merged model by ``merge``.

An adapter directory is peft's format (``adapter_config.json`` + ``adapter_model.safetensors``); it is merged into the
base weights (``merge_and_unload``) in float32 before any cast, so inference runs on a plain ``Sam3Model``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Sam3Model
from transformers.utils import logging as transformers_logging

from model.calibration import CALIBRATION_FILE, read_thresholds
from model.identity import ModelIdentity
from model.preprocess import ImageSpec

logger = logging.getLogger(__name__)

MERGE_RECORD = "itvsam_merge.json"
MODEL_LABEL = "itvsam_model.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_CHUNK = 16 << 20


class ModelLoadError(RuntimeError):
    """A model or adapter directory is missing, incomplete or does not match the architecture."""


@dataclass(frozen=True, eq=False)
class LoadedSam3:
    """A ready network: ``Sam3Model`` in eval mode on its device/dtype, its tokenizer, image spec and identity."""

    model: Sam3Model
    tokenizer: PreTrainedTokenizerBase
    image_spec: ImageSpec
    identity: ModelIdentity

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _canonical_json_sha256(path: Path, drop: tuple[str, ...] = ()) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in drop:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        raise ModelLoadError(f"model directory {model_dir}: no model*.safetensors weights (found {found[:10]}); "
                             "only safetensors checkpoints are loaded")
    return files


def check_model_dir(model_dir: str | Path) -> Path:
    """Validate a model directory's layout (config, safetensors weights, tokenizer); returns it as a Path."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist (expected a facebook/sam3 snapshot: config.json, "
                             "model.safetensors, vocab.json, merges.txt, processor_config.json)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path}: config.json is missing")
    _weight_files(path)
    if not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()) and \
            not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"model directory {path}: no tokenizer (vocab.json + merges.txt, or tokenizer.json)")
    return path


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """Validate a peft adapter directory (adapter_config.json + adapter_model.safetensors)."""
    path = Path(adapter_dir)
    missing = [n for n in ("adapter_config.json", "adapter_model.safetensors") if not (path / n).is_file()]
    if missing:
        raise ModelLoadError(f"adapter directory {path}: missing {missing} (a peft LoRA adapter in safetensors)")
    return path


def adapter_sha256(adapter_dir: str | Path) -> str:
    """SHA-256 of an adapter: its canonical config JSON and its weights file."""
    path = check_adapter_dir(adapter_dir)
    digest = hashlib.sha256(_canonical_json_sha256(path / "adapter_config.json", ("base_model_name_or_path",
                                                                                  "revision")).encode())
    digest.update(_sha256_files([path / "adapter_model.safetensors"]).encode())
    return digest.hexdigest()


def model_identity(model_dir: str | Path, adapter_dir: str | Path | None = None) -> ModelIdentity:
    """The identity of a model directory (plus an adapter applied on top), from the files on disk."""
    path = check_model_dir(model_dir)
    merged_from = None
    record = path / MERGE_RECORD
    if record.is_file():
        merged_from = json.loads(record.read_text(encoding="utf-8"))
    label_file = path / MODEL_LABEL
    label = json.loads(label_file.read_text(encoding="utf-8")).get("label") if label_file.is_file() else None
    try:
        thresholds = read_thresholds(path if adapter_dir is None else adapter_dir)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    return ModelIdentity(
        config_sha256=_canonical_json_sha256(path / "config.json", ("transformers_version", "_name_or_path")),
        weights_sha256=_sha256_files(_weight_files(path)),
        adapter_sha256=adapter_sha256(adapter_dir) if adapter_dir is not None else None,
        merged_from=merged_from,
        label=label,
        thresholds=thresholds,
    )


def image_spec_for(model: Sam3Model, model_dir: str | Path) -> ImageSpec:
    """The preprocessing of a checkpoint: its image size, and mean/std from its processor config when present."""
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    for name in PROCESSOR_FILES:
        path = Path(model_dir, name)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data = data.get("image_processor", data)
            mean = tuple(float(v) for v in data.get("image_mean", mean))
            std = tuple(float(v) for v in data.get("image_std", std))
            break
    return ImageSpec(image_size=int(model.config.vision_config.image_size), image_mean=mean, image_std=std)


@contextmanager
def without_progress_bars() -> Iterator[None]:
    """transformers' own "Loading weights" / "Writing model shards" bars off (they interleave with our progress and
    fill worker logs with ``celery.redirected`` warnings); the callers show the work in their own progress."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def load_base_model(model_dir: str | Path) -> Sam3Model:
    """``Sam3Model`` in float32 from a snapshot directory, refusing missing, unexpected or mis-shaped weights."""
    path = check_model_dir(model_dir)
    with without_progress_bars():
        model, info = Sam3Model.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                output_loading_info=True, dtype=torch.float32)
    problems = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        summary = "; ".join(f"{k}: {len(v)} (first {v[:3]})" for k, v in problems.items())
        raise ModelLoadError(f"model directory {path} does not match Sam3Model: {summary} {info.get('error_msgs')}")
    return model.eval()


def share_files(directory: str | Path) -> None:
    """Give every file in ``directory`` the mode the process's umask gives new files (0644 under the usual 022).

    safetensors 0.8 writes its files 0600 (a private temporary file, renamed), so a model directory written by one
    user (``merge``, ``convert``, ``train``) could not be read by a worker that runs as another (a container's user).
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(directory).iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """What inference runs in on ``device``: bf16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_sam3(
    model_dir: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedSam3:
    """Load SAM 3 (and merge an optional LoRA adapter) for inference on ``device`` in ``dtype`` (bf16 on CUDA).

    The adapter is merged in float32 before the cast. The identity is computed from the files (config, weights,
    adapter), so the same directories always give the same identity.
    """
    path = check_model_dir(model_dir)
    identity = model_identity(path, adapter_dir)
    model = load_base_model(path)
    if adapter_dir is not None:
        from model.lora import load_adapter

        model = load_adapter(model, adapter_dir).merge_and_unload()
    model = model.to(device=device, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    logger.info("loaded SAM 3 %s (%s) on %s as %s", identity.short, path.name, device, dtype)
    return LoadedSam3(model=model, tokenizer=tokenizer, image_spec=image_spec_for(model, path), identity=identity)


def merge(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> ModelIdentity:
    """Merge a LoRA adapter into the base weights and write a self-contained model directory (``itvsam merge``).

    ``out_dir`` gets ``config.json`` (plain ``sam3``), ``model.safetensors`` (float32), the tokenizer and processor
    files of the base, the adapter's calibration, and ``itvsam_merge.json`` recording the base and adapter
    identities. Refuses an existing non-empty ``out_dir``. Returns the identity of the written directory.
    """
    base = check_model_dir(base_dir)
    adapter = check_adapter_dir(adapter_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty: choose a new one")
    base_identity = model_identity(base)
    from model.lora import load_adapter

    merged = load_adapter(load_base_model(base), adapter).merge_and_unload()
    merged.config.architectures = ["Sam3Model"]
    out.mkdir(parents=True, exist_ok=True)  # empty or new: checked above
    with without_progress_bars():
        merged.save_pretrained(out, safe_serialization=True)
    for name in (*TOKENIZER_FILES, *PROCESSOR_FILES, MODEL_LABEL):
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    if (adapter / CALIBRATION_FILE).is_file():
        shutil.copy2(adapter / CALIBRATION_FILE, out / CALIBRATION_FILE)
    record = {"base_config_sha256": base_identity.config_sha256,
              "base_weights_sha256": base_identity.weights_sha256,
              "adapter_sha256": adapter_sha256(adapter)}
    (out / MERGE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    share_files(out)
    identity = model_identity(out)
    logger.info("merged adapter %s into %s → %s", record["adapter_sha256"][:12], base.name, identity.short)
    return identity
