"""A tiny SAM 3 of the real architecture, with a tokenizer built here, for tests, benchmarks and demos. No download.

``write_tiny_checkpoint(dir)`` writes a directory that loads exactly like the official ``facebook/sam3`` snapshot:

- ``config.json``: in the official layout a ``sam3_video`` config whose ``detector_config`` is the tiny ``Sam3Config``;
  in the plain layout a ``sam3`` config (what ``Sam3Model.save_pretrained`` and our ``merge`` write);
- ``model.safetensors``: in the official layout every detector tensor under ``detector_model.`` plus tracker tensors
  (``tracker_model.*``, ``tracker_neck.*``) that ``Sam3Model`` ignores; in the plain layout the bare keys;
- ``vocab.json`` + ``merges.txt`` (CLIP byte-level BPE), ``tokenizer_config.json``, ``special_tokens_map.json``,
  ``tokenizer.json``, and ``processor_config.json`` (image size, mean, std).

The tokenizer has the 256 byte symbols (alone and word-final), merges spelling out a small medical vocabulary, and the
two CLIP special tokens last, as in CLIP; any lowercase text tokenizes (unknown words fall back to characters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

from model.preprocess import TEXT_MAX_LENGTH

# Words of the prompts of the default thoracic template and its common synonyms.
TINY_WORDS: tuple[str, ...] = (
    "gross", "tumor", "tumour", "volume", "lung", "lungs", "left", "right", "heart", "lesion", "nodule", "mass",
    "cancer", "primary", "esophagus", "oesophagus", "spinal", "cord", "trachea", "aorta", "liver", "body", "bone",
    "rib", "ribs", "the", "a", "of", "in", "and",
)
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
TINY_IMAGE_SIZE = 112


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of the 256 byte values to printable unicode symbols."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            symbols.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(s) for s in symbols), strict=True))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE: repeatedly merge the adjacent pair of lowest rank (what the tokenizer does to one word)."""
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), len(ranks) + 1), i) for i, (a, b) in enumerate(pairwise(symbols))]
        rank, i = min(pairs)
        if rank > len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2:]]
    return symbols


def tiny_vocabulary(words: Iterable[str] = TINY_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (token → id) and ordered BPE merges of the tiny CLIP tokenizer: each word is one token.

    Words are added in order; each gets the merges that join, left to right, the pieces that the merges so far leave
    of it (new merges rank after all earlier ones, so earlier words still end as one token).
    """
    byte_map = _bytes_to_unicode()
    alphabet = list(byte_map.values())
    tokens = alphabet + [s + "</w>" for s in alphabet]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w.lower() for w in words}):
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        pieces = _apply_merges(symbols, ranks)
        current = pieces[0]
        for nxt in pieces[1:]:
            ranks[(current, nxt)] = len(merges)
            merges.append((current, nxt))
            current += nxt
            if current not in known:
                tokens.append(current)
                known.add(current)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tiny_tokenizer(out_dir: str | Path, words: Iterable[str] = TINY_WORDS) -> CLIPTokenizer:
    """Write vocab.json + merges.txt for ``words`` into ``out_dir``, load them as a CLIP tokenizer, save its configs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocabulary(words)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_MAX_LENGTH)
    tokenizer.save_pretrained(out)
    return tokenizer


def tiny_config(vocab_size: int | None = None, image_size: int = TINY_IMAGE_SIZE) -> Sam3Config:
    """A ~0.5 M parameter ``Sam3Config`` of the real architecture (ViT hidden 64, 4 layers, 2 of them global).

    ``image_size`` must be a multiple of 14 · 4 (patch size times the window size of 4 tokens would be ideal; windows
    are padded otherwise). The text config sets ``hidden_act`` (a dict text_config otherwise falls back to CLIP
    defaults) and the special token ids of the tiny tokenizer.
    """
    if vocab_size is None:
        vocab_size = len(tiny_vocabulary()[0])
    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of the patch size 14, got {image_size}")
    grid = image_size // 14
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                "num_attention_heads": 4, "image_size": image_size, "patch_size": 14, "window_size": 4,
                "global_attn_indexes": [1, 3], "pretrain_image_size": 56,
            },
            "fpn_hidden_size": 32,
            "backbone_feature_sizes": [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        },
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": TEXT_MAX_LENGTH,
            "hidden_act": "gelu", "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        },
        geometry_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 4, "intermediate_size": 64},
        detr_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 4, "intermediate_size": 64},
        detr_decoder_config={"hidden_size": 32, "num_layers": 2, "num_queries": 8, "num_attention_heads": 4,
                             "intermediate_size": 64},
        mask_decoder_config={"hidden_size": 32, "num_upsampling_stages": 3, "num_attention_heads": 4},
    )


def write_processor_config(out_dir: str | Path, image_size: int, mask_size: int) -> None:
    """``processor_config.json`` as the official snapshot has it (what our preprocessing reads: size, mean, std)."""
    processor = {
        "image_processor": {
            "image_processor_type": "Sam3ImageProcessor", "do_resize": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": {"height": image_size, "width": image_size},
            "mask_size": {"height": mask_size, "width": mask_size},
        },
        "processor_class": "Sam3Processor",
        "target_size": image_size,
    }
    Path(out_dir, "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")


def random_tensor(name: str, shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A seeded random weight for parameter ``name``: std 0.02 around 0, norms' weights around 1 (float dtypes only)."""
    values = torch.randn(tuple(shape), generator=generator) * 0.02
    if name.endswith(".weight") and len(shape) == 1 and ("norm" in name or "layer_norm" in name):
        values += 1.0
    return values.to(dtype).contiguous()


def _random_state_dict(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random tensors of the same names, shapes and dtypes (``random_tensor``; other dtypes copied)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, tensor.shape, tensor.dtype, generator) if tensor.is_floating_point()
            else tensor.clone() for name, tensor in state.items()}


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = TINY_IMAGE_SIZE,
    layout: Literal["official", "plain"] = "official",
    words: Sequence[str] = TINY_WORDS,
) -> Path:
    """Write a tiny SAM 3 snapshot directory (see the module docstring) with seeded random weights; returns its path.

    The weights are random tensors of the tiny model's parameter names and shapes (not an initialised model), so a
    test can check that every one of them was loaded.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out, words)
    config = tiny_config(vocab_size=len(tokenizer), image_size=image_size)
    with torch.device("meta"):
        shapes = Sam3Model(config).state_dict()
    state = _random_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()}, seed)
    if layout == "official":
        from transformers import Sam3VideoConfig

        video = Sam3VideoConfig(detector_config=config.to_dict())
        video.architectures = ["Sam3VideoModel"]
        video.save_pretrained(out)
        state = {f"detector_model.{k}": v for k, v in state.items()}
        generator = torch.Generator().manual_seed(seed + 1)
        state["tracker_neck.fpn_layers.0.proj1.weight"] = torch.randn(32, 64, 1, 1, generator=generator)
        state["tracker_model.memory_encoder.projection.weight"] = torch.randn(16, 32, 1, 1, generator=generator)
    elif layout == "plain":
        config.architectures = ["Sam3Model"]
        config.save_pretrained(out)
    else:
        raise ValueError(f"layout must be 'official' or 'plain', got {layout!r}")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_processor_config(out, image_size, image_size * 4 // 14)
    return out
