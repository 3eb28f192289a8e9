"""SAM 3 seen as a slice network: encode images once, encode prompts once, decode every (image batch, prompt) pair.

``Sam3SliceNetwork`` adapts transformers' ``Sam3Model`` to the ``SliceNetwork`` protocol the predictor uses
(``model.predictor``): the ViT + FPN run once per slice (``get_vision_features``), the CLIP text encoder once per
prompt (``get_text_features``), and the DETR encoder/decoder and mask decoder once per (slice batch, prompt), reusing
both through ``Sam3Model.forward(vision_embeds=..., text_embeds=...)``.

Which output makes the structure's probability map (``MaskSource``), per pixel:

- ``SEMANTIC``: the semantic head, ``sigmoid(semantic_seg)``: one dense map per prompt (a 1×1 conv on the
  prompt-conditioned pixel embedding), with no query competition, no instance-score threshold, no Hungarian
  matching; what ``Sam3Processor.post_process_semantic_segmentation`` thresholds.
- ``INSTANCES``: the score-weighted union of the 200 (tiny: 8) query masks,
  ``max_q sigmoid(pred_logits_q) · sigmoid(pred_masks_q)``; it depends on a query firing for each part.
- ``UNION``: the pixel-wise maximum of both.

With ``presence_gating`` the map is multiplied by ``sigmoid(presence)``, the image-level "is the concept on this
slice" score that SAM 3 decouples from localisation (its instance scores are ``sigmoid(logit) · sigmoid(presence)``).
The presence score is returned per slice either way. ``model.predictor`` records what was measured to choose the
default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from transformers import PreTrainedTokenizerBase, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from model.preprocess import TEXT_MAX_LENGTH, ImageSpec
from model.sam3 import LoadedSam3


class MaskSource(Enum):
    """Which SAM 3 output gives a structure's per-pixel probability (see the module docstring)."""

    SEMANTIC = "semantic"
    INSTANCES = "instances"
    UNION = "union"


# Chosen by measurement: see ``model.predictor``.
DEFAULT_MASK_SOURCE = MaskSource.UNION
DEFAULT_PRESENCE_GATING = False


@dataclass(frozen=True)
class PromptEmbedding:
    """One encoded text prompt: ``features`` (1, tokens, hidden) projected to the DETR width; ``mask`` (1, tokens)."""

    text: str
    features: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class SliceMaps:
    """A decoded batch for one prompt: ``probability`` (b, h, w) in [0, 1] on the model's mask grid and
    ``presence`` (b,) in [0, 1], both float32."""

    probability: torch.Tensor
    presence: torch.Tensor


def combine_outputs(
    semantic_logits: torch.Tensor,
    instance_mask_logits: torch.Tensor,
    instance_logits: torch.Tensor,
    presence_logits: torch.Tensor,
    source: MaskSource,
    presence_gating: bool,
) -> SliceMaps:
    """SAM 3 outputs → a per-pixel probability per image (see the module docstring).

    ``semantic_logits``: (b, 1, h, w); ``instance_mask_logits``: (b, q, h, w); ``instance_logits``: (b, q);
    ``presence_logits``: (b, 1). Computed in float32.
    """
    presence = presence_logits.float().sigmoid()[:, 0]  # (b,)
    maps = []
    if source in (MaskSource.SEMANTIC, MaskSource.UNION):
        maps.append(semantic_logits.float().sigmoid()[:, 0])
    if source in (MaskSource.INSTANCES, MaskSource.UNION):
        scores = instance_logits.float().sigmoid()  # (b, q)
        maps.append((scores[:, :, None, None] * instance_mask_logits.float().sigmoid()).amax(dim=1))
    probability = maps[0] if len(maps) == 1 else torch.maximum(maps[0], maps[1])
    if presence_gating:
        probability = probability * presence[:, None, None]
    return SliceMaps(probability=probability, presence=presence)


class Sam3SliceNetwork:
    """``Sam3Model`` + tokenizer as a ``SliceNetwork``. The model must already be on its device and dtype."""

    def __init__(self, model: Sam3Model, tokenizer: PreTrainedTokenizerBase, image_spec: ImageSpec,
                 mask_source: MaskSource = DEFAULT_MASK_SOURCE, presence_gating: bool = DEFAULT_PRESENCE_GATING
                 ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_spec = image_spec
        self.mask_source = mask_source
        self.presence_gating = presence_gating
        self._prompts: dict[str, PromptEmbedding] = {}

    @classmethod
    def from_loaded(cls, loaded: LoadedSam3, mask_source: MaskSource = DEFAULT_MASK_SOURCE,
                    presence_gating: bool = DEFAULT_PRESENCE_GATING) -> Sam3SliceNetwork:
        return cls(loaded.model, loaded.tokenizer, loaded.image_spec, mask_source, presence_gating)

    def encode_images(self, images: torch.Tensor) -> object:
        """(b, 3, S, S) normalised images → the ViT + FPN features (``Sam3VisionEncoderOutput``)."""
        return self.model.get_vision_features(pixel_values=images.to(device=self.model.device, dtype=self.model.dtype))

    def encode_prompts(self, prompts: Sequence[str]) -> list[PromptEmbedding]:
        """Text prompts → one ``PromptEmbedding`` each (CLIP text encoder + projection). Each text is encoded once in
        the network's life (the weights are fixed while it exists), so every volume after the first reuses them."""
        new = list(dict.fromkeys(p for p in prompts if p not in self._prompts))
        if new:
            tokens = self.tokenizer(new, padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True,
                                    return_tensors="pt").to(self.model.device)
            features = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                    attention_mask=tokens["attention_mask"]).pooler_output
            self._prompts.update({p: PromptEmbedding(text=p, features=features[i:i + 1],
                                                     mask=tokens["attention_mask"][i:i + 1])
                                  for i, p in enumerate(new)})
        return [self._prompts[p] for p in prompts]

    def decode(self, image_features: object, prompt: PromptEmbedding) -> SliceMaps:
        """Decode a batch of encoded images for one prompt (the prompt is broadcast over the batch)."""
        batch = image_features.fpn_hidden_states[0].shape[0]
        text = BaseModelOutputWithPooling(pooler_output=prompt.features.expand(batch, -1, -1))
        out = self.model(vision_embeds=image_features, text_embeds=text,
                         attention_mask=prompt.mask.expand(batch, -1))
        return combine_outputs(out.semantic_seg, out.pred_masks, out.pred_logits, out.presence_logits,
                               self.mask_source, self.presence_gating)
