"""SAM 3 + LoRA segmentation, refinement and the ITV (see ARCHITECTURE.md). Built in the engine issue."""
