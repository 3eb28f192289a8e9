"""The slice predictor's strategy with stub networks: batching, one encoder call per slice, prompts, OOM halving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model.predictor import PredictorSettings, SlicePredictor
from model.preprocess import ImageSpec


@dataclass
class Maps:
    probability: torch.Tensor
    presence: torch.Tensor


class StubNetwork:
    """Prompt "lung" → the lung-window channel as probability (presence 0.7); "flat" → 0.2 everywhere (0.3)."""

    image_spec = ImageSpec(image_size=28)

    def __init__(self, oom_above: int | None = None) -> None:
        self.oom_above = oom_above
        self.encoded: list[int] = []
        self.prompt_calls: list[list[str]] = []
        self.decoded = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.oom_above is not None and len(images) > self.oom_above:
            raise torch.OutOfMemoryError(f"stub: {len(images)} images do not fit")
        self.encoded.append(len(images))
        return images

    def encode_prompts(self, prompts: Sequence[str]) -> list[str]:
        self.prompt_calls.append(list(prompts))
        return list(prompts)

    def decode(self, features: torch.Tensor, prompt: str) -> Maps:
        self.decoded += 1
        lung = (features[:, 0] + 1) / 2  # back to [0, 1]
        small = torch.nn.functional.avg_pool2d(lung[:, None], 2)[:, 0]  # a 14 x 14 "mask grid"
        if prompt == "lung":
            return Maps(small, torch.full((len(features),), 0.7))
        return Maps(torch.full_like(small, 0.2), torch.full((len(features),), 0.3))


def _volume(n: int = 11) -> np.ndarray:
    volume = np.full((n, 20, 24), -1000, dtype=np.int16)
    volume[:, 5:15, 6:18] = 200  # top of the lung window: probability 1 inside
    return volume


def test_predictor_batches_encodes_each_slice_once_and_combines_prompts() -> None:
    network = StubNetwork()
    progress: list[tuple[int, int]] = []
    predictor = SlicePredictor(network, PredictorSettings(batch_size=4))
    result = predictor.predict(_volume(), {"Lung": ["lung", "flat"], "Other": ["flat"]},
                               progress=lambda done, total: progress.append((done, total)))
    assert network.encoded == [4, 4, 3]  # the image encoder ran once per slice
    assert network.prompt_calls == [["lung", "flat", "flat"]]  # prompts encoded once per volume
    assert network.decoded == 3 * 3
    assert progress == [(4, 11), (8, 11), (11, 11)]
    lung, other = result["Lung"], result["Other"]
    assert lung.probability.shape == (11, 20, 24) and lung.probability.dtype == np.float32
    assert lung.presence.shape == (11,) and lung.presence.dtype == np.float32
    assert lung.probability.min() >= 0.0 and lung.probability.max() <= 1.0
    assert lung.probability[:, 10, 12].min() > 0.95 and lung.probability[:, 0, 0].max() == pytest.approx(0.2)
    np.testing.assert_allclose(lung.presence, 0.7)  # max over the structure's prompts
    np.testing.assert_allclose(other.probability, 0.2, atol=1e-6)
    np.testing.assert_allclose(other.presence, 0.3)


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size() -> None:
    network = StubNetwork(oom_above=3)
    predictor = SlicePredictor(network, PredictorSettings(batch_size=8))
    reference = SlicePredictor(StubNetwork(), PredictorSettings(batch_size=1)).predict(_volume(), {"L": ["lung"]})
    result = predictor.predict(_volume(), {"L": ["lung"]})
    assert network.encoded == [2, 2, 2, 2, 2, 1]  # 8 and 4 failed; 2 from then on
    assert predictor.batch_size == 2
    np.testing.assert_allclose(result["L"].probability, reference["L"].probability, atol=1e-6)


def test_phases_stream_in_full_batches_across_their_boundaries() -> None:
    network = StubNetwork()
    progress: list[tuple[int, int]] = []
    predictor = SlicePredictor(network, PredictorSettings(batch_size=4))
    phases = [_volume(5), _volume(5), _volume(3)]
    phases[1][:, 5:15, 6:18] = -1000  # the second phase has no lung: its maps must not leak into its neighbours
    stream = predictor.predict_volumes(phases, {"L": ["lung"]}, progress=lambda d, t: progress.append((d, t)))
    done = []
    for k, prediction in stream:
        done.append((k, len(network.encoded)))  # which batch completed each phase
        reference = SlicePredictor(StubNetwork(), PredictorSettings(batch_size=1)).predict(phases[k], {"L": ["lung"]})
        np.testing.assert_allclose(prediction["L"].probability, reference["L"].probability, atol=1e-6)
        assert prediction["L"].probability.shape == phases[k].shape
    assert network.encoded == [4, 4, 4, 1]  # 13 slices in full batches, not 4+1, 4+1, 3
    assert network.prompt_calls == [["lung"]]
    assert done == [(0, 2), (1, 3), (2, 4)]  # each phase as soon as its last slice was decoded
    assert progress == [(4, 13), (8, 13), (12, 13), (13, 13)]


def test_a_batch_never_mixes_slice_shapes() -> None:
    network = StubNetwork()
    wide = np.full((2, 20, 30), -1000, dtype=np.int16)
    results = dict(SlicePredictor(network, PredictorSettings(batch_size=4)).predict_volumes(
        [_volume(3), wide], {"L": ["lung"]}))
    assert network.encoded == [3, 2]
    assert results[0]["L"].probability.shape == (3, 20, 24) and results[1]["L"].probability.shape == (2, 20, 30)


def test_out_of_memory_at_batch_one_propagates() -> None:
    predictor = SlicePredictor(StubNetwork(oom_above=0), PredictorSettings(batch_size=4))
    with pytest.raises(torch.OutOfMemoryError, match="do not fit"):
        predictor.predict(_volume(3), {"L": ["lung"]})


def test_predictor_refuses_bad_inputs() -> None:
    predictor = SlicePredictor(StubNetwork())
    with pytest.raises(ValueError, match=r"volume_hu must be \(z, y, x\)"):
        predictor.predict(np.zeros((4, 4)), {"L": ["lung"]})
    with pytest.raises(ValueError, match="at least one prompt; none for \\['L'\\]"):
        predictor.predict(_volume(2), {"L": []})
    with pytest.raises(ValueError, match="batch_size"):
        PredictorSettings(batch_size=0)
