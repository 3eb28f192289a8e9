"""Torch-free, web-free DICOM core of itvsam: reading 4DCT studies, geometry, RT outputs, the synthetic phantom."""
