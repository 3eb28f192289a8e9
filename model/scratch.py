"""A freshly initialised small SAM 3 to train from scratch (the phantom model has no pretrained weights).

``init_model_dir`` writes a plain-layout model directory (``config.json``, ``model.safetensors``, the tiny tokenizer,
``processor_config.json``) whose weights are ``Sam3Model``'s own initialisation under a fixed seed, so that training
from scratch starts, like LoRA training, from a model directory that ``model.sam3.load_base_model`` accepts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Sam3Model

from model.tiny import tiny_config, write_processor_config, write_tiny_tokenizer


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
    model.save_pretrained(out, safe_serialization=True)
    write_processor_config(out, image_size, image_size * 4 // 14)
    return out
