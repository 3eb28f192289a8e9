"""The slice predictor with the real (tiny) SAM 3: batched on CPU, encoder once per slice, batch-invariant, bf16."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.network import MaskSource, Sam3SliceNetwork
from model.predictor import PredictorSettings, SlicePredictor
from model.preprocess import ct_to_images
from model.sam3 import load_sam3
from model.tiny import write_tiny_checkpoint

STRUCTURES = {"GTV": ["gross tumor volume", "lung tumour"], "Lung_L": ["left lung"], "Heart": ["heart"]}


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """The tiny model's tensors are too small to gain from threads; on a busy 2-core machine they lose 10-50x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "sam3", seed=5)


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    volume = rng.normal(-800, 60, (6, 64, 56)).astype(np.int16)
    volume[:, 20:44, 14:40] = 40
    return volume


class CountingNetwork(Sam3SliceNetwork):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: list[int] = []

    def encode_images(self, images: torch.Tensor) -> object:
        self.encoded.append(len(images))
        return super().encode_images(images)


def test_tiny_sam3_predicts_batched_on_cpu(tiny_dir: Path) -> None:
    loaded = load_sam3(tiny_dir)
    network = CountingNetwork(loaded.model, loaded.tokenizer, loaded.image_spec)
    volume = _volume()
    batched = SlicePredictor(network, PredictorSettings(batch_size=4)).predict(volume, STRUCTURES)
    assert network.encoded == [4, 2]  # once per slice, in batches
    single = SlicePredictor(network, PredictorSettings(batch_size=1)).predict(volume, STRUCTURES)
    for name in STRUCTURES:
        result = batched[name]
        assert result.probability.shape == volume.shape and result.probability.dtype == np.float32
        assert result.presence.shape == (volume.shape[0],)
        assert float(result.probability.min()) >= 0.0 and float(result.probability.max()) <= 1.0
        assert np.all((result.presence >= 0) & (result.presence <= 1))
        np.testing.assert_allclose(result.probability, single[name].probability, atol=2e-5)
        np.testing.assert_allclose(result.presence, single[name].presence, atol=2e-5)
    # the two GTV prompts combine by maximum: at least each prompt alone
    alone = SlicePredictor(network, PredictorSettings(batch_size=6)).predict(volume, {"a": ["lung tumour"]})
    assert np.all(batched["GTV"].probability >= alone["a"].probability - 1e-6)


def test_mask_sources_semantic_instances_union(tiny_dir: Path) -> None:
    loaded = load_sam3(tiny_dir)
    volume = _volume()[:2]
    results = {source: SlicePredictor(Sam3SliceNetwork.from_loaded(loaded, source)).predict(volume, {"h": ["heart"]})
               ["h"].probability for source in MaskSource}
    for probability in results.values():
        assert float(probability.min()) >= 0.0 and float(probability.max()) <= 1.0
    expected = np.maximum(results[MaskSource.SEMANTIC], results[MaskSource.INSTANCES])
    np.testing.assert_allclose(results[MaskSource.UNION], expected, atol=1e-5)


def test_reused_features_give_the_full_forward_pass(tiny_dir: Path) -> None:
    """Encoding images once and decoding each prompt on the features equals Sam3Model's own forward pass."""
    loaded = load_sam3(tiny_dir)
    network = Sam3SliceNetwork.from_loaded(loaded, MaskSource.SEMANTIC, presence_gating=False)
    images = ct_to_images(_volume()[:3], loaded.image_spec)
    with torch.inference_mode():
        tokens = loaded.tokenizer(["heart"] * 3, padding="max_length", max_length=32, return_tensors="pt")
        direct = loaded.model(pixel_values=images, input_ids=tokens["input_ids"],
                              attention_mask=tokens["attention_mask"])
        maps = network.decode(network.encode_images(images), network.encode_prompts(["left lung", "heart"])[1])
    torch.testing.assert_close(maps.probability, direct.semantic_seg.sigmoid()[:, 0])
    torch.testing.assert_close(maps.presence, direct.presence_logits.sigmoid()[:, 0])


@pytest.mark.slow
def test_tiny_sam3_in_bfloat16_agrees_with_float32(tiny_dir: Path) -> None:
    volume = _volume()[:4]
    full = load_sam3(tiny_dir)
    half = load_sam3(tiny_dir, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    reference = SlicePredictor(Sam3SliceNetwork.from_loaded(full)).predict(volume, STRUCTURES)
    result = SlicePredictor(Sam3SliceNetwork.from_loaded(half), PredictorSettings(dtype=torch.bfloat16)).predict(
        volume, STRUCTURES)
    for name in STRUCTURES:
        assert result[name].probability.dtype == np.float32
        np.testing.assert_allclose(result[name].probability, reference[name].probability, atol=0.05)


def test_refinement_motion_metrics_and_typed_results_do_not_import_torch() -> None:
    code = ("import sys, model.refine, model.motion, model.metrics, model.segment, model.identity, workers.results; "
            "sys.exit(1 if any(m == 'torch' or m.startswith(('torch.', 'transformers')) for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
