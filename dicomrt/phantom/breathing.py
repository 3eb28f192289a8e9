"""The breathing model: a Lujan-type curve, the tumour's looped trajectory and the thorax's superior-inferior warp.

Convention: phase 0 % is end-inhale, 50 % is end-exhale (for 10 phases). The reference anatomy is drawn at
end-exhale; inhalation moves the diaphragm and the tumour inferiorly (towards -z in LPS) and the tumour anteriorly
(towards -y).

The curve (Lujan et al., Med. Phys. 26, 1999) is ``c(t) = cos^(2n)(pi t)``, ``t`` = percent / 100 in [0, 1): ``c = 1``
at end-inhale (0 %), ``c = 0`` at end-exhale (50 %), with the longer dwell at exhale of real breathing (n = 2).
Amplitudes are peak-to-peak of this continuous curve. The anterior-posterior and left-right components follow the
same curve delayed by a fraction of the cycle (hysteresis), so that the trajectory is a loop and not a line; at the
sampled phases their excursion can fall slightly short of the amplitude.

Real traces are less tidy: a ``BreathingTrace`` bends the cycle's time (a longer end-exhale plateau, a faster inhale
than exhale, turning points between sampled phases); the whole thorax breathes with the one trace of its
``MotionModel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUJAN_EXPONENT = 2  # n in cos^(2n)


def breathing_curve(t: np.ndarray | float) -> np.ndarray:
    """``cos^(2n)(pi t)``: 1 at end-inhale (t = 0), 0 at end-exhale (t = 0.5); ``t`` in cycles, any shape."""
    return np.cos(np.pi * np.asarray(t, dtype=np.float64)) ** (2 * LUJAN_EXPONENT)


@dataclass(frozen=True)
class BreathingTrace:
    """The breathing curve of one patient: ``c(t) = cos^4(pi w(t - shift_cycles))``, ``t`` in cycles, with the
    periodic time warp ``w(s) = s + warp sin(2 pi s) / (2 pi) + skew (1 - cos(2 pi s)) / (2 pi)``.

    ``w`` keeps the cycle (``w(s + 1) = w(s) + 1``, ``w(0) = 0``) and, since ``w'(s) = 1 + warp cos(2 pi s) +
    skew sin(2 pi s) > 0`` when ``|warp| + |skew| < 1``, the order of events: only their timing changes. ``warp > 0``
    runs time fast around end-inhale and slowly around end-exhale (``w' = 1 + warp`` there, ``1 - warp`` here): a
    longer end-exhale plateau. ``skew < 0`` delays end-exhale (``w(0.5) = 0.5 + skew / pi``): the exhale takes more
    than half the cycle and the inhale is faster. ``shift_cycles`` moves end-inhale from phase 0 to ``t =
    shift_cycles``, between sampled phases, so that no phase catches a turning point exactly. The default trace is
    the regular Lujan curve ``breathing_curve``, value for value.
    """

    warp: float = 0.0
    skew: float = 0.0
    shift_cycles: float = 0.0

    def __post_init__(self) -> None:
        if not all(np.isfinite((self.warp, self.skew, self.shift_cycles))):
            raise ValueError(f"warp, skew and shift_cycles must be finite, got {self}")
        if abs(self.warp) + abs(self.skew) >= 1.0:
            raise ValueError(f"|warp| + |skew| must be below 1 (a monotone time warp), got warp={self.warp}, "
                             f"skew={self.skew}")

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        """The curve at ``t`` (cycles, any shape): 1 at end-inhale, 0 at end-exhale."""
        if self.warp == self.skew == self.shift_cycles == 0.0:
            return breathing_curve(t)  # exactly the regular curve
        s = np.asarray(t, dtype=np.float64) - self.shift_cycles
        angle = 2.0 * np.pi * s
        return breathing_curve(s + (self.warp * np.sin(angle) + self.skew * (1.0 - np.cos(angle))) / (2.0 * np.pi))


@dataclass(frozen=True)
class MotionModel:
    """Motion amplitudes (mm, peak-to-peak) and hysteresis (cycles) of every moving part.

    ``tumour_mm``: (SI, AP, LR) amplitude of the tumour. ``tumour_lag_cycles``: delay of the AP and LR components
    behind the SI one. ``lr_sign``: +1 when the tumour moves to the patient's left at inhale, -1 to the right.
    ``diaphragm_mm``: SI amplitude of the diaphragm domes. ``heart_mm``: (SI, AP) amplitude of the heart.
    ``lung_top_mm``: LPS z of the fixed top of the thoracic warp (above the lung apices). ``lung_pivot_mm``: LPS z,
    at end-exhale, of the highest dome point; below it the content moves rigidly with the diaphragm, above it the
    lungs stretch between the fixed top and the moving pivot. ``trace``: the breathing curve every part follows.
    """

    tumour_mm: tuple[float, float, float]
    tumour_lag_cycles: tuple[float, float]
    lr_sign: float
    diaphragm_mm: float
    heart_mm: tuple[float, float]
    lung_top_mm: float
    lung_pivot_mm: float
    trace: BreathingTrace = BreathingTrace()

    def tumour_displacement(self, t: float) -> np.ndarray:
        """(3,) LPS mm displacement (x, y, z) of the tumour at phase ``t`` (cycles) from its end-exhale position."""
        si, ap, lr = self.tumour_mm
        lag_ap, lag_lr = self.tumour_lag_cycles
        return np.array([
            self.lr_sign * lr * float(self.trace(t - lag_lr)),
            -ap * float(self.trace(t - lag_ap)),  # anterior at inhale
            -si * float(self.trace(t)),  # inferior at inhale
        ])

    def heart_displacement(self, t: float) -> np.ndarray:
        """(3,) LPS mm displacement (x, y, z) of the heart at phase ``t`` from its end-exhale position."""
        si, ap = self.heart_mm
        c = float(self.trace(t))
        return np.array([0.0, -ap * c, -si * c])

    def diaphragm_shift(self, t: float) -> float:
        """LPS z shift (mm, <= 0) of the diaphragm at phase ``t`` from end-exhale."""
        return -self.diaphragm_mm * float(self.trace(t))

    def to_reference_z(self, z: np.ndarray, t: float) -> np.ndarray:
        """Pull-back of the thoracic warp: the end-exhale LPS z (mm) of the tissue found at LPS z ``z`` at phase ``t``.

        The lungs stretch linearly between the fixed top and the pivot, which moves with the diaphragm; below the
        pivot everything translates with the diaphragm. The map is continuous and increasing; any shape.
        """
        z = np.asarray(z, dtype=np.float64)
        d = self.diaphragm_shift(t)
        top, pivot = self.lung_top_mm, self.lung_pivot_mm
        scale = (top - pivot) / (top - pivot - d)
        return np.where(z >= pivot + d, top + (z - top) * scale, z - d)

    def from_reference_z(self, z_ref: np.ndarray, t: float) -> np.ndarray:
        """Inverse of ``to_reference_z``: the LPS z (mm) at phase ``t`` of the tissue at end-exhale z ``z_ref``."""
        z_ref = np.asarray(z_ref, dtype=np.float64)
        d = self.diaphragm_shift(t)
        top, pivot = self.lung_top_mm, self.lung_pivot_mm
        return np.where(z_ref >= pivot, top + (z_ref - top) * (top - pivot - d) / (top - pivot), z_ref + d)

    def lung_density_shift_hu(self, t: float) -> float:
        """Change of the lung parenchyma's HU at phase ``t``: more air, lower HU at inhale (about -15 HU for a
        20 mm diaphragm excursion), relative to the mid-cycle value."""
        return -15.0 * min(self.diaphragm_mm / 20.0, 1.5) * (2.0 * float(self.trace(t)) - 1.0)
