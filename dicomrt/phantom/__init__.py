"""A synthetic, realistic 4DCT of the thorax with exact ground truth: test fixture, demo and benchmark input and
training data.

``generate_phantom(PhantomConfig(seed=...))`` builds it in memory (``Phantom4D``); ``write_phantom`` writes it as
CT Image Storage files in one of several vendor styles (``VendorStyle``), with the truth masks beside them. Phase 0 %
is end-inhale, 50 % end-exhale. Synthetic phantom, not patient data.
"""

from dicomrt.phantom.artifacts import ArtifactRecord
from dicomrt.phantom.config import Artifact, Breathing, Compression, PhantomConfig, PhantomSize, VendorStyle
from dicomrt.phantom.generate import STRUCTURES, Phantom4D, TumourInfo, generate_phantom, slab
from dicomrt.phantom.writer import PhantomFiles, VolumeFiles, pixel_encoding, series_description, write_phantom

__all__ = [
    "STRUCTURES",
    "Artifact",
    "ArtifactRecord",
    "Breathing",
    "Compression",
    "Phantom4D",
    "PhantomConfig",
    "PhantomFiles",
    "PhantomSize",
    "TumourInfo",
    "VendorStyle",
    "VolumeFiles",
    "generate_phantom",
    "pixel_encoding",
    "series_description",
    "slab",
    "write_phantom",
]
