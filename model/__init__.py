"""SAM 3 + LoRA segmentation, refinement and the ITV (see ARCHITECTURE.md).

- ``sam3``: load a local SAM 3 snapshot (safetensors only), merge a LoRA adapter, ``merge``, the model identity;
- ``convert``: Meta's original ``sam3.pt`` → a model directory (``itvsam convert``);
- ``check``: commissioning a model directory (``itvsam check-model``);
- ``tiny``: a tiny SAM 3 of the same architecture and a tokenizer built here (tests, benchmarks, demos);
- ``fullsize``: the official architecture with random weights in the ``facebook/sam3`` layout (tests, benchmarks);
- ``lora``: LoRA on the ViT attention (and MLP) with peft;
- ``preprocess``: HU windows → model images and model maps → slice grid, shared by training and inference;
- ``network`` / ``predictor``: SAM 3 as a slice network, and the batched slice predictor;
- ``segment``: every phase through the predictor (the one path from CT volumes to masks);
- ``refine``, ``motion``, ``metrics``: torch-free (numpy/scipy) refinement, motion, Dice and HD95;
- ``datasets``, ``samples``, ``mining``, ``losses``, ``training``, ``scratch``, ``recipes``: training (LoRA, or full
  training from scratch) on annotated CT (clinics' CT + RTSTRUCT, phantoms) with hard negative mining;
- ``evaluate``: Dice, HD95, volume error and false-positive slices against truth (``itvsam eval``);
- ``phantom_model/``: the shipped small model trained on phantoms (for ``itvsam demo``; NOT for patients).
"""
