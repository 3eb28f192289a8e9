"""Meta's original SAM 3 checkpoint (``sam3.pt``) → a model directory that ``model.sam3`` loads (``itvsam convert``).

The format read: what Meta's ``sam3`` package (0.1.x, ``sam3.model_builder``) loads, a ``torch.save`` of
``{"model": state_dict}`` (a bare state dict is accepted too, as Meta's loader does). The state dict is that of the
video model: ``detector.*`` is the image detector (``Sam3Image``), ``tracker.*`` the video tracker. Tensors only: the
file is read with ``torch.load(weights_only=True)``, so no pickled code runs, and a pickle that needs more is refused.

What is written: the plain layout of ``merge`` (``config.json`` of a ``sam3`` ``Sam3Config`` with architectures
``["Sam3Model"]``, ``model.safetensors`` with the bare ``Sam3Model`` keys in the source dtype (float32 for Meta's
release), the CLIP tokenizer files copied from ``--tokenizer``, ``processor_config.json``, and ``itvsam_convert.json``
recording the source file's name and SHA-256 and the key counts).

Why our own mapping: transformers has a conversion script (``models/sam3/convert_sam3_to_hf.py``) but ships it in
neither its wheel nor its sdist. The mapping below was written from the key names and shapes of Meta's model built
by ``sam3`` 0.1.4 (the test fixture ``tests/unit/model/data/sam3_pt_keys.json.gz``), and is checked against that list
and ``Sam3Model(Sam3Config())``. Each rule pairs a Meta key template with a ``Sam3Model`` key template; placeholders
``{n}`` (a layer index), ``{i}`` (a norm index), ``{wb}`` (weight or bias) and ``{p}`` (q, k, v: one fused
projection split into three) are filled from the key. Besides renames there are three transforms: the fused q/k/v
projections of the ViT (``attn.qkv``) and of every ``nn.MultiheadAttention`` (``in_proj_*``) are split into thirds
along the output dimension; the ViT position embedding loses its first (class-token) row; the CLIP text projection,
a matrix applied as ``x @ P`` in Meta's code, is transposed into a linear layer's weight.

Dropped, because ``Sam3Model`` (the image detector) has no use for them:

- ``tracker.*``: the video tracker (memory encoder and attention, SAM mask decoder);
- ``detector.backbone.vision_backbone.sam2_convs.*``: the tracker's feature neck on the shared ViT;
- ``detector.geometry_encoder.points_*``: the point-prompt projections (``Sam3Model`` encodes box prompts only);
- ``detector.backbone.vision_backbone.trunk.blocks.*.attn.freqs_cis``: the ViT's RoPE tables, constants that
  ``Sam3Model`` computes from the config.

Any other key, a missing one or a wrong shape refuses the file (``ModelLoadError``, naming the first few keys). The
config is not inferred from the weights: it is ``Sam3Config()`` (the released architecture, 1008 px) unless one is
given, and every tensor must have exactly the shape that config's ``Sam3Model`` expects.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, Sam3Config, Sam3Model

from model.identity import ModelIdentity
from model.sam3 import TOKENIZER_FILES, ModelLoadError, load_base_model, model_identity, share_files
from model.tiny import write_processor_config

logger = logging.getLogger(__name__)

CONVERT_RECORD = "itvsam_convert.json"
DETECTOR = "detector."
TOKENIZER_HINT = ("give --tokenizer a directory with the CLIP tokenizer files (vocab.json + merges.txt, or "
                  "tokenizer.json): those of the facebook/sam3 snapshot, or of any CLIP ViT-L/14 tokenizer "
                  "(e.g. openai/clip-vit-large-patch14); sam3.pt carries none")

Kind = Literal["copy", "qkv", "transpose", "drop_cls"]
_PLACEHOLDERS = {"n": r"\d+", "i": r"[123]", "wb": r"weight|bias", "p": r"q|k|v"}
_QKV = ("q", "k", "v")


def _template_regex(template: str) -> re.Pattern[str]:
    """``"a.{n}.b.{wb}"`` → a regex matching exactly such keys, with a named group per placeholder."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
                      for k, part in enumerate(parts))
    return re.compile(pattern)


@dataclass(frozen=True)
class _Rule:
    """One Meta key template (without ``detector.``) and the ``Sam3Model`` key template it becomes."""

    original: str
    converted: str
    kind: Kind = "copy"
    original_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    converted_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # frozen: the derived regexes are set once, here
        object.__setattr__(self, "original_re", _template_regex(self.original))
        object.__setattr__(self, "converted_re", _template_regex(self.converted))


def _attention(original: str, converted: str, out: str = "o_proj") -> list[_Rule]:
    """An ``nn.MultiheadAttention`` (fused ``in_proj_*``, ``out_proj``) → separate q/k/v projections and ``out``."""
    return [_Rule(f"{original}.in_proj_{{wb}}", f"{converted}.{{p}}_proj.{{wb}}", "qkv"),
            _Rule(f"{original}.out_proj.{{wb}}", f"{converted}.{out}.{{wb}}")]


def _mlp(original: str, converted: str, depth: int) -> list[_Rule]:
    """Meta's ``MLP`` (``layers.0..``) → transformers' numbered layers (``layer1..``)."""
    return [_Rule(f"{original}.layers.{k}.{{wb}}", f"{converted}.layer{k + 1}.{{wb}}") for k in range(depth)]


def _encoder_layer(original: str, converted: str) -> list[_Rule]:
    """A fusion encoder layer (geometry encoder, DETR encoder): self-attention, image cross-attention, MLP, 3 norms."""
    return [*_attention(f"{original}.self_attn", f"{converted}.self_attn"),
            *_attention(f"{original}.cross_attn_image", f"{converted}.cross_attn"),
            _Rule(f"{original}.linear1.{{wb}}", f"{converted}.mlp.fc1.{{wb}}"),
            _Rule(f"{original}.linear2.{{wb}}", f"{converted}.mlp.fc2.{{wb}}"),
            _Rule(f"{original}.norm{{i}}.{{wb}}", f"{converted}.layer_norm{{i}}.{{wb}}")]


_VIT, _NECK = "backbone.vision_backbone.trunk", "backbone.vision_backbone.convs.{n}"
_TEXT, _DECODER = "backbone.language_backbone.encoder", "transformer.decoder"
_GEOMETRY_SAME = ("label_embed", "cls_embed", "boxes_direct_project", "boxes_pool_project", "boxes_pos_enc_project",
                  "final_proj")

RULES: tuple[_Rule, ...] = (
    # The ViT backbone.
    _Rule(f"{_VIT}.pos_embed", "vision_encoder.backbone.embeddings.position_embeddings", "drop_cls"),
    _Rule(f"{_VIT}.patch_embed.proj.weight", "vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"),
    _Rule(f"{_VIT}.ln_pre.{{wb}}", "vision_encoder.backbone.layer_norm.{wb}"),
    _Rule(f"{_VIT}.blocks.{{n}}.norm{{i}}.{{wb}}", "vision_encoder.backbone.layers.{n}.layer_norm{i}.{wb}"),
    _Rule(f"{_VIT}.blocks.{{n}}.attn.qkv.{{wb}}", "vision_encoder.backbone.layers.{n}.attention.{p}_proj.{wb}", "qkv"),
    _Rule(f"{_VIT}.blocks.{{n}}.attn.proj.{{wb}}", "vision_encoder.backbone.layers.{n}.attention.o_proj.{wb}"),
    _Rule(f"{_VIT}.blocks.{{n}}.mlp.fc{{i}}.{{wb}}", "vision_encoder.backbone.layers.{n}.mlp.fc{i}.{wb}"),
    # The FPN neck: level 0 (×4) has two transposed convs around a GELU (Sequential indices 0 and 2), level 1 (×2) one.
    _Rule(f"{_NECK}.dconv_2x2.{{wb}}", "vision_encoder.neck.fpn_layers.{n}.scale_layers.0.{wb}"),
    _Rule(f"{_NECK}.dconv_2x2_0.{{wb}}", "vision_encoder.neck.fpn_layers.{n}.scale_layers.0.{wb}"),
    _Rule(f"{_NECK}.dconv_2x2_1.{{wb}}", "vision_encoder.neck.fpn_layers.{n}.scale_layers.2.{wb}"),
    _Rule(f"{_NECK}.conv_1x1.{{wb}}", "vision_encoder.neck.fpn_layers.{n}.proj1.{wb}"),
    _Rule(f"{_NECK}.conv_3x3.{{wb}}", "vision_encoder.neck.fpn_layers.{n}.proj2.{wb}"),
    # The CLIP text encoder (open_clip layout) and its projection to the detector width.
    _Rule(f"{_TEXT}.token_embedding.weight", "text_encoder.text_model.embeddings.token_embedding.weight"),
    _Rule(f"{_TEXT}.positional_embedding", "text_encoder.text_model.embeddings.position_embedding.weight"),
    _Rule(f"{_TEXT}.ln_final.{{wb}}", "text_encoder.text_model.final_layer_norm.{wb}"),
    _Rule(f"{_TEXT}.text_projection", "text_encoder.text_projection.weight", "transpose"),
    *_attention(f"{_TEXT}.transformer.resblocks.{{n}}.attn", "text_encoder.text_model.encoder.layers.{n}.self_attn",
                out="out_proj"),
    _Rule(f"{_TEXT}.transformer.resblocks.{{n}}.ln_{{i}}.{{wb}}",
          "text_encoder.text_model.encoder.layers.{n}.layer_norm{i}.{wb}"),
    _Rule(f"{_TEXT}.transformer.resblocks.{{n}}.mlp.c_fc.{{wb}}",
          "text_encoder.text_model.encoder.layers.{n}.mlp.fc1.{wb}"),
    _Rule(f"{_TEXT}.transformer.resblocks.{{n}}.mlp.c_proj.{{wb}}",
          "text_encoder.text_model.encoder.layers.{n}.mlp.fc2.{wb}"),
    _Rule("backbone.language_backbone.resizer.{wb}", "text_projection.{wb}"),
    # The geometry (box prompt) encoder.
    *(_Rule(f"geometry_encoder.{name}.{{wb}}", f"geometry_encoder.{name}.{{wb}}") for name in _GEOMETRY_SAME),
    _Rule("geometry_encoder.img_pre_norm.{wb}", "geometry_encoder.vision_layer_norm.{wb}"),
    _Rule("geometry_encoder.norm.{wb}", "geometry_encoder.prompt_layer_norm.{wb}"),
    _Rule("geometry_encoder.encode_norm.{wb}", "geometry_encoder.output_layer_norm.{wb}"),
    *_encoder_layer("geometry_encoder.encode.{n}", "geometry_encoder.layers.{n}"),
    # The DETR encoder (image features × text).
    *_encoder_layer("transformer.encoder.layers.{n}", "detr_encoder.layers.{n}"),
    # The DETR decoder.
    *_attention(f"{_DECODER}.layers.{{n}}.self_attn", "detr_decoder.layers.{n}.self_attn"),
    *_attention(f"{_DECODER}.layers.{{n}}.ca_text", "detr_decoder.layers.{n}.text_cross_attn"),
    *_attention(f"{_DECODER}.layers.{{n}}.cross_attn", "detr_decoder.layers.{n}.vision_cross_attn"),
    _Rule(f"{_DECODER}.layers.{{n}}.linear1.{{wb}}", "detr_decoder.layers.{n}.mlp.fc1.{wb}"),
    _Rule(f"{_DECODER}.layers.{{n}}.linear2.{{wb}}", "detr_decoder.layers.{n}.mlp.fc2.{wb}"),
    _Rule(f"{_DECODER}.layers.{{n}}.norm1.{{wb}}", "detr_decoder.layers.{n}.vision_cross_attn_layer_norm.{wb}"),
    _Rule(f"{_DECODER}.layers.{{n}}.catext_norm.{{wb}}", "detr_decoder.layers.{n}.text_cross_attn_layer_norm.{wb}"),
    _Rule(f"{_DECODER}.layers.{{n}}.norm2.{{wb}}", "detr_decoder.layers.{n}.self_attn_layer_norm.{wb}"),
    _Rule(f"{_DECODER}.layers.{{n}}.norm3.{{wb}}", "detr_decoder.layers.{n}.mlp_layer_norm.{wb}"),
    *(_Rule(f"{_DECODER}.{name}.weight", f"detr_decoder.{name}.weight")
      for name in ("query_embed", "reference_points", "presence_token")),
    _Rule(f"{_DECODER}.norm.{{wb}}", "detr_decoder.output_layer_norm.{wb}"),
    _Rule(f"{_DECODER}.presence_token_out_norm.{{wb}}", "detr_decoder.presence_layer_norm.{wb}"),
    *_mlp(f"{_DECODER}.bbox_embed", "detr_decoder.box_head", 3),
    *_mlp(f"{_DECODER}.presence_token_head", "detr_decoder.presence_head", 3),
    *_mlp(f"{_DECODER}.ref_point_head", "detr_decoder.ref_point_head", 2),
    *_mlp(f"{_DECODER}.boxRPB_embed_x", "detr_decoder.box_rpb_embed_x", 2),
    *_mlp(f"{_DECODER}.boxRPB_embed_y", "detr_decoder.box_rpb_embed_y", 2),
    # Scoring of the queries against the prompt.
    *_mlp("dot_prod_scoring.prompt_mlp", "dot_product_scoring.text_mlp", 2),
    _Rule("dot_prod_scoring.prompt_mlp.out_norm.{wb}", "dot_product_scoring.text_mlp_out_norm.{wb}"),
    _Rule("dot_prod_scoring.prompt_proj.{wb}", "dot_product_scoring.text_proj.{wb}"),
    _Rule("dot_prod_scoring.hs_proj.{wb}", "dot_product_scoring.query_proj.{wb}"),
    # The mask decoder (segmentation head).
    _Rule("segmentation_head.pixel_decoder.conv_layers.{n}.{wb}", "mask_decoder.pixel_decoder.conv_layers.{n}.{wb}"),
    _Rule("segmentation_head.pixel_decoder.norms.{n}.{wb}", "mask_decoder.pixel_decoder.norms.{n}.{wb}"),
    _Rule("segmentation_head.mask_predictor.mask_embed.layers.{n}.{wb}", "mask_decoder.mask_embedder.layers.{n}.{wb}"),
    _Rule("segmentation_head.instance_seg_head.{wb}", "mask_decoder.instance_projection.{wb}"),
    _Rule("segmentation_head.semantic_seg_head.{wb}", "mask_decoder.semantic_projection.{wb}"),
    *_attention("segmentation_head.cross_attend_prompt", "mask_decoder.prompt_cross_attn"),
    _Rule("segmentation_head.cross_attn_norm.{wb}", "mask_decoder.prompt_cross_attn_norm.{wb}"),
)

# Keys of sam3.pt that Sam3Model has no use for (see the module docstring), by reason.
DROPPED: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("tracker", re.compile(r"tracker\..+")),
    ("tracker_neck", re.compile(r"detector\.backbone\.vision_backbone\.sam2_convs\..+")),
    ("point_prompts", re.compile(r"detector\.geometry_encoder\.points_(direct|pool|pos_enc)_project\.(weight|bias)")),
    ("rope_tables", re.compile(r"detector\.backbone\.vision_backbone\.trunk\.blocks\.\d+\.attn\.freqs_cis")),
)


def _first(keys: list[str], count: int = 5) -> str:
    return ", ".join(keys[:count]) + (f", ... ({len(keys)} in all)" if len(keys) > count else "")


def dropped_reason(key: str) -> str | None:
    """Why a key of ``sam3.pt`` is not converted (a ``DROPPED`` reason), or None for a key that is."""
    return next((reason for reason, pattern in DROPPED if pattern.fullmatch(key)), None)


def converted_keys(key: str) -> tuple[_Rule, list[str]] | None:
    """The rule for an original key and the ``Sam3Model`` key(s) it becomes (three for a fused q/k/v); None: no rule."""
    if not key.startswith(DETECTOR):
        return None
    name = key.removeprefix(DETECTOR)
    for rule in RULES:
        match = rule.original_re.fullmatch(name)
        if match:
            groups = match.groupdict()
            if rule.kind == "qkv":
                return rule, [rule.converted.format(**groups, p=p) for p in _QKV]
            return rule, [rule.converted.format(**groups)]
    return None


def _inverse(converted: str) -> tuple[_Rule, str, str | None] | None:
    """The rule of a ``Sam3Model`` key, the ``sam3.pt`` key it comes from, and which of q/k/v it is (or None)."""
    for rule in RULES:
        match = rule.converted_re.fullmatch(converted)
        if match:
            groups = match.groupdict()
            part = groups.pop("p", None)
            return rule, DETECTOR + rule.original.format(**groups), part
    return None


def original_key(converted: str) -> str | None:
    """The ``sam3.pt`` key a ``Sam3Model`` key comes from (the inverse of ``converted_keys``); None: no rule.
    (The ×2 neck level's transposed conv is named ``dconv_2x2``; the ×4 level's first one is ``dconv_2x2_0``.)"""
    found = _inverse(converted)
    return found[1] if found else None


def expected_shapes(config: Sam3Config) -> dict[str, torch.Size]:
    """Every tensor of ``Sam3Model(config)`` and its shape (built on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in Sam3Model(config).state_dict().items()}


def _transform(rule: _Rule, tensor: torch.Tensor) -> list[torch.Tensor] | None:
    """The converted tensor(s) of one original tensor; None when its shape cannot be (a q/k/v not divisible by 3)."""
    if rule.kind == "qkv":
        if tensor.shape[0] % 3:
            return None
        return [part.clone() for part in torch.chunk(tensor, 3, dim=0)]  # clone: no shared storage in safetensors
    if rule.kind == "transpose":
        return [tensor.t().contiguous()] if tensor.ndim == 2 else None
    if rule.kind == "drop_cls":
        return [tensor[:, 1:].clone()] if tensor.ndim == 3 and tensor.shape[1] > 1 else None
    return [tensor]


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def convert_state_dict(original: Mapping[str, torch.Tensor], config: Sam3Config, source: str = "checkpoint"
                       ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map a ``sam3.pt`` state dict to exactly the tensors of ``Sam3Model(config)``; returns them and the dropped
    key counts by reason. Works on meta tensors too. Refuses (``ModelLoadError``, naming the first keys) a key that is
    neither converted nor dropped, a tensor it does not fill, and a shape that differs from the model's."""
    expected = expected_shapes(config)
    converted: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    unknown, mismatched, seen = [], [], set()
    for key, tensor in original.items():
        reason = dropped_reason(key)
        if reason is not None:
            dropped[reason] += 1
            continue
        found = converted_keys(key)
        if found is None:
            unknown.append(key)
            continue
        rule, names = found
        if seen & set(names):
            unknown.append(f"{key} (→ {names[0]}, given twice)")
            continue
        seen.update(names)
        tensors = _transform(rule, tensor)
        if tensors is None:
            mismatched.append(f"{key} {_shape(tensor)}")
            continue
        for name, value in zip(names, tensors, strict=True):
            if name not in expected:
                unknown.append(f"{key} (→ {name})")
            elif value.shape != expected[name]:
                mismatched.append(f"{key} {_shape(tensor)} (→ {name} {_shape(value)}, expected "
                                  f"{tuple(expected[name])})")
            else:
                converted[name] = value
    missing = sorted({original_key(k) or k for k in expected.keys() - seen})
    problems = [f"{len(keys)} {what}: {_first(keys)}" for what, keys in (
        ("keys that SAM 3 does not have", unknown), ("tensors of the wrong shape", mismatched),
        ("tensors missing", missing)) if keys]
    if problems:
        raise ModelLoadError(f"{source} is not a SAM 3 checkpoint of this architecture ({_config_summary(config)}): "
                             + "; ".join(problems))
    return converted, dict(sorted(dropped.items()))


def _config_summary(config: Sam3Config) -> str:
    vision = config.vision_config
    return (f"image size {vision.image_size}, ViT {vision.backbone_config.num_hidden_layers} × "
            f"{vision.backbone_config.hidden_size}, text {config.text_config.num_hidden_layers} × "
            f"{config.text_config.hidden_size}")


def _refused_pickle(path: Path, exc: pickle.UnpicklingError) -> ModelLoadError:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    what = f"it holds {found.group(1)}" if found else text.strip().splitlines()[-1][:200]
    return ModelLoadError(f"{path}: torch.load(weights_only=True) refused it ({what}): only plain tensor checkpoints "
                          "are read, no pickled code is run; save the state dict alone (torch.save({'model': "
                          "model.state_dict()}, path))")


def read_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a ``sam3.pt``: ``torch.load(weights_only=True)`` on the CPU, then its ``"model"`` entry
    (or the whole file when it has none, as Meta's loader reads it). Refuses anything that is not str → tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused_pickle(path, exc) from None
    except (RuntimeError, EOFError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot be read as a torch checkpoint ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise ModelLoadError(f"{path}: expected a state dict (or {{'model': state dict}}), got {type(data).__name__}")
    bad = [str(k) for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"{path}: {len(bad)} entries are not tensors: {_first(bad)}")
    return dict(data)


def load_config(path: str | Path | None) -> Sam3Config:
    """The architecture to convert to: a ``sam3`` config JSON (e.g. a model directory's config.json), or None for
    ``Sam3Config()``, the released SAM 3."""
    if path is None:
        return Sam3Config()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"config {path}: cannot read it as JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("model_type") != "sam3":
        found = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise ModelLoadError(f"config {path}: expected a Sam3Config (model_type 'sam3'), got {found!r}")
    return Sam3Config.from_dict(data)


def _tokenizer_files(tokenizer_dir: Path) -> list[Path]:
    if not tokenizer_dir.is_dir():
        raise FileNotFoundError(f"no such tokenizer directory: {tokenizer_dir}")
    files = [tokenizer_dir / name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]
    names = {f.name for f in files}
    if not ({"vocab.json", "merges.txt"} <= names or "tokenizer.json" in names):
        raise ModelLoadError(f"tokenizer directory {tokenizer_dir} has no CLIP tokenizer (found "
                             f"{sorted(p.name for p in tokenizer_dir.iterdir())[:10]}): {TOKENIZER_HINT}")
    return files


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert_checkpoint`` wrote: the directory, its parameter and tensor counts, the source keys dropped by
    reason (``DROPPED``), and the identity of the written directory."""

    out_dir: Path
    parameters: int
    tensors: int
    source_keys: int
    dropped: dict[str, int]
    identity: ModelIdentity


def _clean_up(out: Path, created: bool) -> None:
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    config: Sam3Config | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConversionResult:
    """Convert Meta's ``sam3.pt`` into a new model directory (see the module docstring); returns what it wrote.

    ``config``: the architecture (default ``Sam3Config()``, the released one). Everything is checked before anything
    is written: the tokenizer files, the key set and every shape. After writing, the directory is loaded as
    ``itvsam run`` loads it (``load_base_model``: no missing, unexpected or mis-shaped weight) and its tokenizer must
    fit the text vocabulary; on any failure the output directory is removed again. Refuses an existing non-empty
    ``out_dir`` (``FileExistsError``) and a missing file (``FileNotFoundError``).
    """
    show = progress or (lambda _message: None)
    source, out = Path(checkpoint), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty: choose a new one")
    if not source.is_file():
        raise FileNotFoundError(f"no such checkpoint: {source}")
    tokenizer_files = _tokenizer_files(Path(tokenizer_dir))
    config = copy.deepcopy(config if config is not None else Sam3Config())
    show(f"reading {source.name}")
    original = read_original_checkpoint(source)
    source_keys = len(original)
    show("mapping the keys")
    state, dropped = convert_state_dict(original, config, source=str(source))
    del original
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # new or empty: checked above
    try:
        show("writing model.safetensors")
        config.architectures = ["Sam3Model"]
        config.save_pretrained(out)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        tensors = len(state)
        del state
        for path in tokenizer_files:
            shutil.copy2(path, out / path.name)
        image_size = int(config.vision_config.image_size)
        write_processor_config(out, image_size, image_size * 4 // 14)
        show(f"hashing {source.name}")
        record = {"source_file": source.name, "source_sha256": _sha256(source), "source_keys": source_keys,
                  "converted_tensors": tensors, "dropped_keys": dropped}
        (out / CONVERT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        show("checking that it loads")
        model = load_base_model(out)
        parameters = sum(p.numel() for p in model.parameters())
        del model
        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
        if len(tokenizer) > config.text_config.vocab_size:
            raise ModelLoadError(f"tokenizer of {tokenizer_dir} has {len(tokenizer)} tokens, more than the text "
                                 f"encoder's vocabulary of {config.text_config.vocab_size}: {TOKENIZER_HINT}")
        identity = model_identity(out)
        share_files(out)
    except BaseException:
        _clean_up(out, created)
        raise
    logger.info("converted %s → %s: %d parameters, dropped %s, identity %s", source.name, out, parameters, dropped,
                identity.short)
    return ConversionResult(out_dir=out, parameters=parameters, tensors=tensors, source_keys=source_keys,
                            dropped=dropped, identity=identity)


def original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``convert_state_dict``: ``Sam3Model`` tensors in ``sam3.pt``'s layout (``detector.*``; q/k/v
    fused again, a class-token row of zeros put back in front of the position embedding, the text projection
    transposed back). For tests and benchmarks; what ``DROPPED`` lists cannot be made and is not."""
    fused: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        found = _inverse(name)
        if found is None:
            raise ValueError(f"{name} is not a Sam3Model tensor that sam3.pt holds")
        rule, key, part = found
        if rule.kind == "qkv":
            fused.setdefault(key, {})[part] = tensor
        elif rule.kind == "transpose":
            out[key] = tensor.t().contiguous()
        elif rule.kind == "drop_cls":
            out[key] = torch.cat([torch.zeros_like(tensor[:, :1]), tensor], dim=1)
        else:
            out[key] = tensor
    for key, parts in fused.items():
        out[key] = torch.cat([parts[p] for p in _QKV], dim=0)
    # The ×4 level of the neck names its first transposed conv dconv_2x2_0 (it has a second); the ×2 level dconv_2x2.
    for key in [k for k in out if ".dconv_2x2." in k]:
        if key.replace(".dconv_2x2.", ".dconv_2x2_1.") in out:
            out[key.replace(".dconv_2x2.", ".dconv_2x2_0.")] = out.pop(key)
    return out


def write_original_checkpoint(state: Mapping[str, torch.Tensor], path: str | Path,
                              extra: Mapping[str, torch.Tensor] | None = None) -> Path:
    """``torch.save({"model": ...})`` of ``original_state_dict(state)`` plus ``extra`` tensors (e.g. tracker keys),
    as Meta's checkpoint is laid out; returns the path."""
    path = Path(path)
    torch.save({"model": {**original_state_dict(state), **(extra or {})}}, path)
    return path
