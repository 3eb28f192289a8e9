"""How SAM 3's outputs become a structure's probability map (semantic, instances, union; presence gating)."""

from __future__ import annotations

import pytest
import torch

from model.network import MaskSource, combine_outputs


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p)))


@pytest.fixture
def outputs() -> dict[str, torch.Tensor]:
    semantic = torch.full((1, 1, 2, 2), _logit(0.2))
    semantic[0, 0, 0, 0] = _logit(0.9)
    masks = torch.full((1, 2, 2, 2), _logit(0.1))
    masks[0, 0, 1, 1] = _logit(1.0 - 1e-6)  # query 0 covers (1, 1) with score 0.8
    masks[0, 1, 0, 1] = _logit(1.0 - 1e-6)  # query 1 covers (0, 1) with score 0.3
    return {"semantic_logits": semantic, "instance_mask_logits": masks,
            "instance_logits": torch.tensor([[_logit(0.8), _logit(0.3)]]),
            "presence_logits": torch.tensor([[_logit(0.5)]])}


def test_semantic_instances_union_and_gating(outputs: dict[str, torch.Tensor]) -> None:
    semantic = combine_outputs(**outputs, source=MaskSource.SEMANTIC, presence_gating=False)
    torch.testing.assert_close(semantic.probability, torch.tensor([[[0.9, 0.2], [0.2, 0.2]]]))
    torch.testing.assert_close(semantic.presence, torch.tensor([0.5]))
    instances = combine_outputs(**outputs, source=MaskSource.INSTANCES, presence_gating=False)
    torch.testing.assert_close(instances.probability, torch.tensor([[[0.08, 0.3], [0.08, 0.8]]]), atol=1e-5, rtol=0)
    union = combine_outputs(**outputs, source=MaskSource.UNION, presence_gating=False)
    torch.testing.assert_close(union.probability, torch.tensor([[[0.9, 0.3], [0.2, 0.8]]]), atol=1e-5, rtol=0)
    gated = combine_outputs(**outputs, source=MaskSource.UNION, presence_gating=True)
    torch.testing.assert_close(gated.probability, union.probability * 0.5)
