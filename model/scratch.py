"""Starting points for full training of the tiny architecture (the phantom model has no pretrained weights).

``init_model_dir`` writes a plain-layout model directory (``config.json``, ``model.safetensors``, the tiny tokenizer,
``processor_config.json``) whose weights are ``Sam3Model``'s own initialisation under a fixed seed, so that training
from scratch starts, like LoRA training, from a model directory that ``model.sam3.load_base_model`` accepts.
``resize_model_dir`` copies a tiny-architecture model to another input size, weights unchanged, to train on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Sam3Model

from model.sam3 import MODEL_LABEL, TOKENIZER_FILES, check_model_dir, without_progress_bars
from model.tiny import tiny_config, write_processor_config, write_tiny_tokenizer  # the phantom model's architecture


def init_model_dir(out_dir: str | Path, *, image_size: int = 224, seed: int = 0) -> Path:
    """Write an initialised tiny-architecture SAM 3 at ``image_size`` px (a multiple of 14) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out)
    config = tiny_config(vocab_size=len(tokenizer), image_size=image_size)
    config.architectures = ["Sam3Model"]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Sam3Model(config)
    finally:
        torch.random.set_rng_state(state)
    with without_progress_bars():
        model.save_pretrained(out, safe_serialization=True)
    write_processor_config(out, image_size, image_size * 4 // 14)
    return out


def resize_model_dir(model_dir: str | Path, out_dir: str | Path, *, image_size: int) -> Path:
    """Copy the tiny-architecture model in ``model_dir`` into ``out_dir`` with input size ``image_size`` (a multiple
    of 14), every weight unchanged: none depends on the input size (the ViT's position embeddings are tiled over the
    patch grid, its rotary embeddings and the FPN follow the grid), so the copy computes the same function on a finer
    grid: a head start for training at a higher resolution (at 224 px the phantom's masks were 64 px, 6 mm pixels).
    Refuses weights that do not fit the tiny architecture."""
    source, out = check_model_dir(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, MODEL_LABEL):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    vocab_size = json.loads((source / "config.json").read_text(encoding="utf-8"))["text_config"]["vocab_size"]
    config = tiny_config(vocab_size=vocab_size, image_size=image_size)
    config.architectures = ["Sam3Model"]
    model = Sam3Model(config)
    weights = {}
    for path in sorted(source.glob("model*.safetensors")):
        weights.update(load_file(str(path)))
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # mis-shaped tensors
        raise ValueError(f"{source} is not a tiny-architecture SAM 3: {str(exc)[:300]}") from None
    if missing or unexpected:
        raise ValueError(f"{source} is not a tiny-architecture SAM 3: missing {sorted(missing)[:3]}, unexpected "
                         f"{sorted(unexpected)[:3]}")
    with without_progress_bars():
        model.save_pretrained(out, safe_serialization=True)
    write_processor_config(out, image_size, image_size * 4 // 14)
    return out
