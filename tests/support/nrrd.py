"""A small NRRD reader for plastimatch's outputs, and resampling onto a ``Geometry`` through the header's affine."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from dicomrt.geometry import Geometry

_TYPES = {"unsigned char": np.uint8, "uchar": np.uint8, "uint8": np.uint8, "short": np.int16, "int16": np.int16,
          "unsigned short": np.uint16, "ushort": np.uint16, "int": np.int32, "float": np.float32}


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data indexed [i, j, k] along the header's axes in file order, fastest first; 4x4 affine (i, j, k, 1) → LPS mm).

    Supports plastimatch's outputs: a 3D attached-data NRRD, raw or gzip, space left-posterior-superior (or RAS,
    converted to LPS by negating x and y).
    """
    raw = Path(path).read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in head.decode("ascii").splitlines()[1:] if ": " in line)
    sizes = [int(v) for v in fields["sizes"].split()]
    vectors = [[float(v) for v in group.split(",")] for group in re.findall(r"\(([^)]*)\)", fields["space directions"])]
    origin = [float(v) for v in re.findall(r"\(([^)]*)\)", fields["space origin"])[0].split(",")]
    affine = np.eye(4)
    affine[:3, :3] = np.array(vectors).T
    affine[:3, 3] = origin
    space = fields["space"].lower()
    if space in ("right-anterior-superior", "ras"):
        affine[:2] *= -1
    elif space not in ("left-posterior-superior", "lps"):
        raise ValueError(f"unsupported NRRD space {space!r}")
    if fields.get("encoding") in ("gzip", "gz"):
        body = gzip.decompress(body)
    dtype = np.dtype(_TYPES[fields["type"]])
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    data = np.frombuffer(body, dtype=dtype, count=int(np.prod(sizes))).reshape(sizes[::-1]).transpose(2, 1, 0)
    return data, affine


def nrrd_on_grid(path: Path, geometry: Geometry) -> np.ndarray:
    """The NRRD's values (nearest voxel, 0 outside) at every voxel centre of ``geometry``: (z, y, x) array."""
    data, affine = read_nrrd(path)
    inverse = np.linalg.inv(affine)
    out = np.zeros(geometry.shape, dtype=data.dtype)
    ys, xs = np.mgrid[:geometry.shape[1], :geometry.shape[2]]
    for k in range(geometry.shape[0]):
        zyx = np.column_stack([np.full(ys.size, k), ys.ravel(), xs.ravel()])
        lps = geometry.index_to_patient(zyx)
        ijk = np.round(lps @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.array(data.shape)), axis=1)
        values = np.zeros(ys.size, dtype=data.dtype)
        values[inside] = data[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        out[k] = values.reshape(geometry.shape[1:])
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)
