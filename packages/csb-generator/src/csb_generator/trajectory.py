"""Random camera-shake trajectories (Boracchi & Foi 2012, docs/model.md#1-trajectory).

A trajectory is a particle path sampled at ``num_samples`` instants: complex positions whose real
part is the column and imaginary part the row, in pixels, starting at 0. The particle moves at
constant speed, receives Gaussian pushes, is pulled back towards its start, and rarely reverses
abruptly (a "big shake").

Order of random draws (fixed, so that a sample is a pure function of its Generator):

1. each parameter left as ``None``, in the order anxiety, centripetal, gaussian,
   freq_big_shakes: one ``rng.random()`` each;
2. the initial angle (unless given): one ``rng.random()``, times 2 pi;
3. if anxiety > 0: ``rng.random((N - 1, 2))`` (per step: the shake test, the shake angle) and then
   ``rng.standard_normal((N - 1, 2))`` (per step: the real and imaginary push). A straight
   trajectory (anxiety 0) takes no per-step draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numba
import numpy as np

__all__ = ["Trajectory", "linear_trajectory", "random_trajectory", "trajectory_from_draws"]

DEFAULT_NUM_SAMPLES = 2000

#: Upper ends of the uniform draws of the parameters a user leaves unset (thesis code values).
ANXIETY_SCALE = 0.01
CENTRIPETAL_SCALE = 0.7
GAUSSIAN_SCALE = 10.0
FREQ_BIG_SHAKES_SCALE = 0.2


@dataclass(frozen=True)
class Trajectory:
    """A sampled camera-shake path and the parameters that produced it.

    Attributes
    ----------
    positions : ndarray of complex128, shape (num_samples,)
        Positions in pixels: real part = column, imaginary part = row. ``positions[0] == 0``.
    length : float
        Total path length in pixels (the sum of the step lengths).
    anxiety, centripetal, gaussian, freq_big_shakes : float
        Model parameters actually used, drawn ones included (NaN where not applicable).
    angle : float
        Initial direction of motion in radians, in [0, 2 pi).
    num_shakes : int
        Number of abrupt inversions ("big shakes") that happened along the path.
    """

    positions: np.ndarray
    length: float
    anxiety: float
    centripetal: float
    gaussian: float
    freq_big_shakes: float
    angle: float
    num_shakes: int

    @property
    def num_samples(self) -> int:
        """Number of time samples along the path."""
        return int(self.positions.shape[0])

    def parameters(self) -> dict[str, float]:
        """The model parameters as a plain dict (what a shard stores per sample)."""
        return {
            "length": self.length,
            "anxiety": self.anxiety,
            "centripetal": self.centripetal,
            "gaussian": self.gaussian,
            "freq_big_shakes": self.freq_big_shakes,
        }


@numba.njit(cache=True)
def _integrate_path(step, anxiety, centripetal, gaussian, freq_big_shakes, v0, uniforms, normals):
    # The pseudo-code's complex recurrence, written on (real, imaginary) pairs: numba's complex
    # division and hypot-based abs cost twice the loop. Each real operation is the one CPython
    # performs for the complex expression (float * complex scales both parts, complex / float
    # divides both parts), so the positions are bit-identical to a complex-number transcription.
    n = uniforms.shape[0] + 1
    x = np.zeros(n, dtype=np.complex128)
    xr, xi = 0.0, 0.0
    vr, vi = v0.real * anxiety, v0.imag * anxiety
    num_shakes = 0
    for t in range(n - 1):
        shake_r, shake_i = 0.0, 0.0
        if uniforms[t, 0] < freq_big_shakes * anxiety:
            phi = np.pi + uniforms[t, 1] - 0.5
            c, s = math.cos(phi), math.sin(phi)
            shake_r = 2.0 * vr * c - 2.0 * vi * s
            shake_i = 2.0 * vr * s + 2.0 * vi * c
            num_shakes += 1
        dv_r = shake_r + anxiety * (gaussian * normals[t, 0] - centripetal * xr) * step
        dv_i = shake_i + anxiety * (gaussian * normals[t, 1] - centripetal * xi) * step
        vr, vi = vr + dv_r, vi + dv_i
        speed = math.hypot(vr, vi)
        vr, vi = vr / speed * step, vi / speed * step
        xr, xi = xr + vr, xi + vi
        x[t + 1] = complex(xr, xi)
    return x, num_shakes


def _check_positive(name: str, value: float, *, allow_zero: bool) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def trajectory_from_draws(
    length: float,
    anxiety: float,
    centripetal: float,
    gaussian: float,
    freq_big_shakes: float,
    angle: float,
    uniforms: np.ndarray | None,
    normals: np.ndarray | None,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
) -> Trajectory:
    """Integrate the trajectory model from explicit random draws.

    This is the deterministic core of :func:`random_trajectory`: it lets the model be run on a
    given sequence of draws (for instance to compare it with another implementation).

    Parameters
    ----------
    length : float
        Path length in pixels, > 0.
    anxiety : float
        Shakiness, >= 0; 0 gives a straight segment.
    centripetal : float
        Strength of the pull back towards the start point, >= 0.
    gaussian : float
        Standard deviation multiplier of the random pushes, >= 0.
    freq_big_shakes : float
        Probability per step (times ``anxiety``) of an abrupt inversion, in [0, 1].
    angle : float
        Initial direction of motion in radians.
    uniforms : ndarray, shape (num_samples - 1, 2), or None
        Per step: the uniform draw of the shake test and of the shake angle, in [0, 1).
        Ignored (may be None) when ``anxiety == 0``.
    normals : ndarray, shape (num_samples - 1, 2), or None
        Per step: standard-normal real and imaginary parts of the push. Ignored when
        ``anxiety == 0``.
    num_samples : int, optional
        Number of time samples N, >= 2. Default 2000.

    Returns
    -------
    Trajectory
    """
    if anxiety == 0:
        straight = linear_trajectory(length, angle, num_samples=num_samples)
        return replace(
            straight, centripetal=centripetal, gaussian=gaussian, freq_big_shakes=freq_big_shakes
        )
    if uniforms is None or normals is None:
        raise ValueError("uniforms and normals are required when anxiety > 0")
    uniforms = np.ascontiguousarray(uniforms, dtype=np.float64)
    normals = np.ascontiguousarray(normals, dtype=np.float64)
    if uniforms.shape != (num_samples - 1, 2) or normals.shape != uniforms.shape:
        raise ValueError("uniforms and normals must both have shape (num_samples - 1, 2)")
    step = length / (num_samples - 1)
    v0 = complex(math.cos(angle), math.sin(angle))
    positions, num_shakes = _integrate_path(
        step, anxiety, centripetal, gaussian, freq_big_shakes, v0, uniforms, normals
    )
    return Trajectory(
        positions=positions,
        length=float(length),
        anxiety=float(anxiety),
        centripetal=float(centripetal),
        gaussian=float(gaussian),
        freq_big_shakes=float(freq_big_shakes),
        angle=float(angle) % (2 * math.pi),
        num_shakes=int(num_shakes),
    )


def random_trajectory(
    rng: np.random.Generator,
    length: float,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    anxiety: float | None = None,
    centripetal: float | None = None,
    gaussian: float | None = None,
    freq_big_shakes: float | None = None,
    angle: float | None = None,
) -> Trajectory:
    """Draw a random camera-shake trajectory (docs/model.md#1-trajectory).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw (see the module docstring for their order).
    length : float
        Total path length in pixels, > 0. The path length is exactly this value.
    num_samples : int, optional
        Number of time samples N, >= 2. Default 2000.
    anxiety : float, optional
        Shakiness, >= 0. Default: drawn as ``0.01 * U`` (the thesis value). 0 gives a straight line.
    centripetal : float, optional
        Pull towards the start point, >= 0. Default: drawn as ``0.7 * U``.
    gaussian : float, optional
        Scale of the random pushes, >= 0. Default: drawn as ``10 * U``.
    freq_big_shakes : float, optional
        Frequency of abrupt inversions, in [0, 1]. Default: drawn as ``0.2 * U``.
    angle : float, optional
        Initial direction in radians. Default: drawn uniformly in [0, 2 pi).

    Returns
    -------
    Trajectory
        The positions and every parameter used, drawn ones included.

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator import random_trajectory
    >>> traj = random_trajectory(np.random.default_rng(0), length=16.0)
    >>> traj.num_samples
    2000
    >>> bool(np.isclose(np.abs(np.diff(traj.positions)).sum(), 16.0))
    True
    """
    length = _check_positive("length", length, allow_zero=False)
    if int(num_samples) != num_samples or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    num_samples = int(num_samples)
    if anxiety is None:
        anxiety = ANXIETY_SCALE * rng.random()
    if centripetal is None:
        centripetal = CENTRIPETAL_SCALE * rng.random()
    if gaussian is None:
        gaussian = GAUSSIAN_SCALE * rng.random()
    if freq_big_shakes is None:
        freq_big_shakes = FREQ_BIG_SHAKES_SCALE * rng.random()
    anxiety = _check_positive("anxiety", anxiety, allow_zero=True)
    centripetal = _check_positive("centripetal", centripetal, allow_zero=True)
    gaussian = _check_positive("gaussian", gaussian, allow_zero=True)
    freq_big_shakes = _check_positive("freq_big_shakes", freq_big_shakes, allow_zero=True)
    if freq_big_shakes > 1:
        raise ValueError(f"freq_big_shakes must be in [0, 1], got {freq_big_shakes!r}")
    if angle is None:
        angle = 2 * math.pi * rng.random()
    uniforms = normals = None
    if anxiety > 0:
        uniforms = rng.random((num_samples - 1, 2))
        normals = rng.standard_normal((num_samples - 1, 2))
    return trajectory_from_draws(
        length,
        anxiety,
        centripetal,
        gaussian,
        freq_big_shakes,
        angle,
        uniforms,
        normals,
        num_samples=num_samples,
    )


def linear_trajectory(
    length: float, angle: float = 0.0, *, num_samples: int = DEFAULT_NUM_SAMPLES
) -> Trajectory:
    """A straight, uniform-speed trajectory: the anxiety-0 case of the model.

    Parameters
    ----------
    length : float
        Segment length in pixels, > 0.
    angle : float, optional
        Direction in radians (0 = towards +column, pi/2 = towards +row). Default 0.
    num_samples : int, optional
        Number of time samples, >= 2. Default 2000.

    Returns
    -------
    Trajectory
        With ``anxiety == 0`` and the other shake parameters NaN.

    Examples
    --------
    >>> from csb_generator import linear_trajectory
    >>> traj = linear_trajectory(10.0, angle=0.0, num_samples=11)
    >>> traj.positions[-1]
    np.complex128(10+0j)
    """
    length = _check_positive("length", length, allow_zero=False)
    if int(num_samples) != num_samples or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    step = length / (num_samples - 1)
    direction = complex(math.cos(angle), math.sin(angle))
    positions = (direction * step) * np.arange(int(num_samples), dtype=np.float64)
    return Trajectory(
        positions=positions.astype(np.complex128),
        length=length,
        anxiety=0.0,
        centripetal=math.nan,
        gaussian=math.nan,
        freq_big_shakes=math.nan,
        angle=float(angle) % (2 * math.pi),
        num_shakes=0,
    )
