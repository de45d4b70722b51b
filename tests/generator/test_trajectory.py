"""Trajectory model (docs/model.md#1-trajectory): exact invariants and parameter bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from csb_generator import (
    Trajectory,
    linear_trajectory,
    random_trajectory,
    trajectory_from_draws,
)
from csb_generator.trajectory import (
    ANXIETY_SCALE,
    CENTRIPETAL_SCALE,
    FREQ_BIG_SHAKES_SCALE,
    GAUSSIAN_SCALE,
)
from plain_model import plain_trajectory_from_draws

EPS = np.finfo(np.float64).eps

# Anxieties from "no shake at all" to far above the default range, where big shakes happen.
ANXIETIES = [None, 0.0, 1e-4, 0.005, 0.05, 0.5, 3.0]


def _step_tolerance(positions: np.ndarray, step: float) -> float:
    """Rounding bound on |x[t+1] - x[t]| - step, relative to step.

    v is normalised to |v| = step up to a few ulps of step; the position update x[t] + v and the
    difference x[t+1] - x[t] each round at the magnitude of |x|, so the error on one step length
    is at most ~4 eps * max|x| + 4 eps * step. Dividing by step gives the relative bound.
    """
    scale = float(np.max(np.abs(positions)))
    return 4 * EPS * (scale / step + 1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("anxiety", ANXIETIES)
@pytest.mark.parametrize("length", [0.5, 16.0, 47.3])
def test_path_length_and_constant_speed(seed, anxiety, length):
    traj = random_trajectory(np.random.default_rng(seed), length, anxiety=anxiety)
    steps = np.abs(np.diff(traj.positions))
    step = length / (traj.num_samples - 1)
    assert traj.positions[0] == 0
    assert traj.positions.dtype == np.complex128
    assert traj.positions.shape == (2000,)
    assert traj.length == length
    # Path length = L exactly, up to summing 1999 rounded terms: 1e-12 relative.
    assert steps.sum() == pytest.approx(length, rel=1e-12)
    # Every step has the same length L / (N - 1).
    rel = np.abs(steps - step) / step
    assert rel.max() <= _step_tolerance(traj.positions, step)


@pytest.mark.parametrize("num_samples", [2, 3, 17, 2000])
def test_num_samples_is_respected(num_samples):
    traj = random_trajectory(np.random.default_rng(3), 5.0, num_samples=num_samples, anxiety=0.3)
    assert traj.num_samples == num_samples
    assert np.abs(np.diff(traj.positions)).sum() == pytest.approx(5.0, rel=1e-12)


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 2, 2.0, math.pi, 4.4, 6.2])
@pytest.mark.parametrize("length", [1.0, 16.0, 100.0])
def test_anxiety_zero_is_a_straight_segment_at_the_angle(angle, length):
    traj = random_trajectory(np.random.default_rng(11), length, anxiety=0.0, angle=angle)
    x = traj.positions
    direction = complex(math.cos(angle), math.sin(angle))
    # Rotating by -angle maps the segment onto the positive real axis: zero imaginary part
    # (collinear, through the origin, along `angle`) and increasing real part (forward motion).
    rotated = x * direction.conjugate()
    # Rounding: |x| <= length, a complex product rounds at ~2 eps of the magnitude.
    assert np.abs(rotated.imag).max() <= 4 * EPS * length
    assert np.all(np.diff(rotated.real) > 0)
    assert rotated.real[-1] == pytest.approx(length, rel=1e-12)
    assert traj.num_shakes == 0
    assert traj.anxiety == 0.0
    assert traj.angle == pytest.approx(angle % (2 * math.pi), abs=1e-15)


def test_straight_segment_points_collinear_for_a_drawn_angle():
    traj = random_trajectory(np.random.default_rng(5), 20.0, anxiety=0.0)
    x = traj.positions
    # Collinearity without knowing the angle: the cross product of (x[t] - x[0]) with the end
    # point vanishes for every t (rounding bound: 8 eps * |x|^2, |x| <= 20).
    end = x[-1]
    cross = x.real * end.imag - x.imag * end.real
    assert np.abs(cross).max() <= 8 * EPS * 20.0**2
    assert np.angle(end) % (2 * math.pi) == pytest.approx(traj.angle, abs=1e-12)


def test_linear_trajectory_matches_anxiety_zero_model():
    traj = linear_trajectory(10.0, angle=0.0, num_samples=11)
    np.testing.assert_array_equal(traj.positions, np.arange(11, dtype=np.complex128))
    assert traj.anxiety == 0.0
    assert math.isnan(traj.centripetal) and math.isnan(traj.gaussian)
    assert traj.num_shakes == 0


def test_shaky_trajectory_is_not_straight():
    # Guard against a degenerate implementation that ignores the pushes: with anxiety 0.5 (no
    # big shakes) the path wanders, so the end point is far closer to the start than the
    # path length (a straight path would end exactly L = 16 px away).
    traj = random_trajectory(
        np.random.default_rng(1), 16.0, anxiety=0.5, gaussian=10.0, freq_big_shakes=0.0
    )
    assert abs(traj.positions[-1]) < 0.5 * 16.0


def test_drawn_parameters_are_recorded_in_draw_order():
    seed = 42
    traj = random_trajectory(np.random.default_rng(seed), 16.0)
    expected = np.random.default_rng(seed)
    anxiety = ANXIETY_SCALE * expected.random()
    centripetal = CENTRIPETAL_SCALE * expected.random()
    gaussian = GAUSSIAN_SCALE * expected.random()
    freq = FREQ_BIG_SHAKES_SCALE * expected.random()
    angle = 2 * math.pi * expected.random()
    assert (traj.anxiety, traj.centripetal, traj.gaussian, traj.freq_big_shakes) == (
        anxiety,
        centripetal,
        gaussian,
        freq,
    )
    assert traj.angle == angle
    # The documented scales are those of the thesis code.
    assert (ANXIETY_SCALE, CENTRIPETAL_SCALE, GAUSSIAN_SCALE, FREQ_BIG_SHAKES_SCALE) == (
        0.01,
        0.7,
        10.0,
        0.2,
    )
    # The per-step draws follow; rebuilding from them gives the same path.
    uniforms = expected.random((1999, 2))
    normals = expected.standard_normal((1999, 2))
    rebuilt = trajectory_from_draws(
        16.0, anxiety, centripetal, gaussian, freq, angle, uniforms, normals
    )
    np.testing.assert_array_equal(traj.positions, rebuilt.positions)
    assert traj.num_shakes == rebuilt.num_shakes


def test_given_parameters_are_used_verbatim_and_not_drawn():
    seed = 7
    given = dict(
        anxiety=0.0123, centripetal=0.456, gaussian=7.89, freq_big_shakes=0.111, angle=1.234
    )
    traj = random_trajectory(np.random.default_rng(seed), 12.0, num_samples=500, **given)
    assert traj.anxiety == given["anxiety"]
    assert traj.centripetal == given["centripetal"]
    assert traj.gaussian == given["gaussian"]
    assert traj.freq_big_shakes == given["freq_big_shakes"]
    assert traj.angle == given["angle"]
    assert traj.parameters() == {
        "length": 12.0,
        "anxiety": given["anxiety"],
        "centripetal": given["centripetal"],
        "gaussian": given["gaussian"],
        "freq_big_shakes": given["freq_big_shakes"],
    }
    # Nothing was drawn for the given parameters: the per-step draws are the first ones.
    rng = np.random.default_rng(seed)
    uniforms = rng.random((499, 2))
    normals = rng.standard_normal((499, 2))
    rebuilt = trajectory_from_draws(
        12.0,
        given["anxiety"],
        given["centripetal"],
        given["gaussian"],
        given["freq_big_shakes"],
        given["angle"],
        uniforms,
        normals,
        num_samples=500,
    )
    np.testing.assert_array_equal(traj.positions, rebuilt.positions)


def test_partially_given_parameters_draw_the_rest_in_order():
    seed = 9
    traj = random_trajectory(
        np.random.default_rng(seed), 8.0, num_samples=300, anxiety=0.2, gaussian=3.0
    )
    rng = np.random.default_rng(seed)
    centripetal = CENTRIPETAL_SCALE * rng.random()
    freq = FREQ_BIG_SHAKES_SCALE * rng.random()
    angle = 2 * math.pi * rng.random()
    assert traj.anxiety == 0.2 and traj.gaussian == 3.0
    assert traj.centripetal == centripetal
    assert traj.freq_big_shakes == freq
    assert traj.angle == angle
    rebuilt = trajectory_from_draws(
        8.0,
        0.2,
        centripetal,
        3.0,
        freq,
        angle,
        rng.random((299, 2)),
        rng.standard_normal((299, 2)),
        num_samples=300,
    )
    np.testing.assert_array_equal(traj.positions, rebuilt.positions)


@pytest.mark.parametrize("seed", range(8))
def test_num_shakes_counts_the_shakes(seed):
    # anxiety 0.5 and frequency 0.2: a shake with probability 0.1 per step, ~200 per path.
    rng = np.random.default_rng(seed)
    uniforms = rng.random((1999, 2))
    normals = rng.standard_normal((1999, 2))
    traj = trajectory_from_draws(16.0, 0.5, 0.3, 5.0, 0.2, 0.7, uniforms, normals)
    expected_count = int(np.sum(uniforms[:, 0] < 0.2 * 0.5))
    _, plain_count = plain_trajectory_from_draws(
        16.0, 0.5, 0.3, 5.0, 0.2, 0.7, uniforms.tolist(), normals.tolist()
    )
    assert traj.num_shakes == expected_count == plain_count
    assert traj.num_shakes > 0


def test_no_shakes_when_frequency_is_zero():
    traj = random_trajectory(np.random.default_rng(0), 16.0, anxiety=2.0, freq_big_shakes=0.0)
    assert traj.num_shakes == 0


def test_trajectory_is_a_frozen_record():
    traj = random_trajectory(np.random.default_rng(0), 4.0, num_samples=10)
    assert isinstance(traj, Trajectory)
    with pytest.raises(AttributeError):
        traj.length = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 0.0},
        {"length": -1.0},
        {"length": math.inf},
        {"length": 1.0, "anxiety": -0.1},
        {"length": 1.0, "centripetal": -1.0},
        {"length": 1.0, "gaussian": math.nan},
        {"length": 1.0, "freq_big_shakes": 1.5},
        {"length": 1.0, "num_samples": 1},
        {"length": 1.0, "num_samples": 2.5},
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        random_trajectory(np.random.default_rng(0), **kwargs)


def test_trajectory_from_draws_checks_the_draws():
    with pytest.raises(ValueError, match="required"):
        trajectory_from_draws(1.0, 0.1, 0.1, 1.0, 0.1, 0.0, None, None, num_samples=10)
    with pytest.raises(ValueError, match="shape"):
        trajectory_from_draws(
            1.0, 0.1, 0.1, 1.0, 0.1, 0.0, np.zeros((8, 2)), np.zeros((9, 2)), num_samples=10
        )
