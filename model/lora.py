"""LoRA on SAM 3's ViT image encoder with peft: typed settings, apply, save and load (peft's format).

Targets are the attention projections of the ViT layers,
``vision_encoder.backbone.layers.N.attention.{q,k,v,o}_proj``, optionally the MLP ``mlp.fc1`` / ``mlp.fc2``, in all
layers. Rank 8 on the four attention projections of the full model is ~2 M parameters (8 MiB).
The text encoder, DETR encoder/decoder and mask decoder stay frozen (they are not targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Sam3Model

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("fc1", "fc2")


@dataclass(frozen=True)
class LoraSettings:
    """Where and how big the LoRA update is.

    ``rank``/``alpha``: the update is ``alpha / rank · B A`` with ``A`` (rank, in), ``B`` (out, rank).
    ``attention``: which of q/k/v/o projections get an adapter. ``mlp``: also ``fc1``/``fc2``.
    ``dropout``: on the adapter input during training.
    ``init_identity``: True (peft's default) starts with ``B = 0`` (the adapted model equals the base); False starts
    with random ``B`` (tests use it so that merging changes outputs).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    attention: tuple[str, ...] = ATTENTION_PROJECTIONS
    mlp: bool = False
    init_identity: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        unknown = set(self.attention) - set(ATTENTION_PROJECTIONS)
        if unknown or not (self.attention or self.mlp):
            raise ValueError(f"attention must be a non-empty subset of {ATTENTION_PROJECTIONS} (or mlp=True), "
                             f"got {self.attention}")

    def target_regex(self) -> str:
        """The peft ``target_modules`` regex (full match on module names)."""
        parts = [rf"attention\.(?:{'|'.join(self.attention)})"] if self.attention else []
        if self.mlp:
            parts.append(rf"mlp\.(?:{'|'.join(MLP_PROJECTIONS)})")
        return rf"(?:.*\.)?vision_encoder\.backbone\.layers\.\d+\.(?:{'|'.join(parts)})"

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_regex(), bias="none", init_lora_weights=self.init_identity)


def apply_lora(model: Sam3Model, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters at ``settings``' targets (everything else frozen)."""
    peft_model = get_peft_model(model, settings.peft_config())
    if not any("lora_" in name for name, _ in peft_model.named_parameters()):
        raise ValueError(f"no module of the model matched the LoRA targets {settings.target_regex()!r}")
    return peft_model


def save_adapter(peft_model: PeftModel, out_dir: str | Path) -> Path:
    """Write the adapter in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    out = Path(out_dir)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def load_adapter(model: Sam3Model, adapter_dir: str | Path, *, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to ``model`` (frozen unless ``trainable``); ``merge_and_unload()`` gives a plain model."""
    from model.sam3 import check_adapter_dir

    return PeftModel.from_pretrained(model, check_adapter_dir(adapter_dir), is_trainable=trainable)
