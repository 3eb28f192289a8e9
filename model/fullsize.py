"""The official SAM 3 architecture with random weights, written as the ``facebook/sam3`` snapshot users download.

The real weights are gated and never downloaded here, yet every path (``run``, ``train``, ``merge``, ``eval``,
``check-model``, the worker) must be proven on the real architecture: 840 M detector parameters whose shapes and key
names the tiny model (``model.tiny``) cannot stand in for. ``write_full_checkpoint(dir)`` writes:

- ``config.json``: ``Sam3VideoConfig()`` defaults (``model_type`` ``sam3_video``, nested ``detector_config`` and
  ``tracker_config``), architectures ``Sam3VideoModel``; only the detector's input size may be reduced
  (``image_size``, e.g. 224 px for CPU tests: every weight keeps its full-size shape, the patch grid and the FPN
  follow), and the text config's special token ids are those of the tokenizer written beside it;
- the weights of every ``Sam3VideoModel`` tensor (``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``),
  seeded random (``model.tiny.random_tensor``), bf16 by default, **sharded** (``model-0000k-of-0000n.safetensors``)
  with ``model.safetensors.index.json``. Written one shard at a time, so memory holds one shard: own code because
  ``save_pretrained``'s sharding needs an instantiated (and initialised) 3.4 GB model;
- the CLIP tokenizer files of our tiny vocabulary (``model.tiny.write_tiny_tokenizer``) and ``processor_config.json``.

About 1.7 GB on disk in bf16 and ~20 s on two cores. Never commit one: tests cache it under their tmp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Sam3VideoConfig, Sam3VideoModel

from model.sam3 import share_files
from model.tiny import random_tensor, write_processor_config, write_tiny_tokenizer

FULL_IMAGE_SIZE = 1008
INDEX_FILE = "model.safetensors.index.json"


def full_config(image_size: int = FULL_IMAGE_SIZE, special_tokens: tuple[int, int, int] | None = None
                ) -> Sam3VideoConfig:
    """The official ``Sam3VideoConfig`` with the detector's input at ``image_size`` px (a multiple of 14).

    ``special_tokens``: (bos, eos, pad) ids of the tokenizer that goes with it (default: CLIP's own).
    """
    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of the patch size 14, got {image_size}")
    config = Sam3VideoConfig()
    vision = config.detector_config.vision_config
    vision.image_size = image_size
    grid = image_size // 14
    vision.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    if special_tokens is not None:
        text = config.detector_config.text_config
        text.bos_token_id, text.eos_token_id, text.pad_token_id = special_tokens
    config.architectures = ["Sam3VideoModel"]
    return config


def _shards(shapes: dict[str, torch.Size], element_bytes: int, max_shard_bytes: int) -> list[list[str]]:
    """Consecutive key groups of at most ``max_shard_bytes`` each (a larger tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * element_bytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_full_checkpoint(out_dir: str | Path, *, image_size: int = FULL_IMAGE_SIZE, seed: int = 0,
                          dtype: torch.dtype = torch.bfloat16, max_shard_bytes: int = 1 << 30) -> Path:
    """Write the official-layout full-size snapshot described in the module docstring into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out)
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    config = full_config(image_size, special)
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in Sam3VideoModel(config).state_dict().items()}
    config.save_pretrained(out)
    element_bytes = torch.empty((), dtype=dtype).element_size()
    groups = _shards(shapes, element_bytes, max_shard_bytes)
    generator = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    for k, names in enumerate(groups, start=1):
        file = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file({name: random_tensor(name, shapes[name], dtype, generator) for name in names}, str(out / file),
                  metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    total = sum(shape.numel() for shape in shapes.values()) * element_bytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    write_processor_config(out, image_size, image_size * 4 // 14)
    share_files(out)
    return out
