"""A deliberately plain pure-Python transcription of the spec's sections 1 and 2.

No NumPy in the loops, no numba: one step of the pseudo-code per line, so that a reader can check
it against ``docs/model.md`` by eye. The tests compare the library with it, and the
benchmarks time the library against it.
"""

from __future__ import annotations

import cmath
import math
import random


def plain_trajectory_from_draws(
    length, anxiety, centripetal, gaussian, freq, angle, uniforms, normals
):
    """Section 1, driven by given draws.

    uniforms[t] = (shake test, shake angle) and normals[t] = (n1, n2), as the library takes them.
    """
    num_samples = len(uniforms) + 1
    step = length / (num_samples - 1)
    v0 = cmath.exp(1j * angle)
    v = v0 * anxiety if anxiety > 0 else v0 * step
    x = [0j]
    shakes = 0
    for t in range(num_samples - 1):
        if anxiety > 0 and uniforms[t][0] < freq * anxiety:
            shake = 2 * v * cmath.exp(1j * (math.pi + uniforms[t][1] - 0.5))
            shakes += 1
        else:
            shake = 0j
        n1, n2 = normals[t]
        dv = shake + anxiety * (gaussian * complex(n1, n2) - centripetal * x[t]) * step
        v = v + dv
        v = v / abs(v) * step
        x.append(x[t] + v)
    return x, shakes


def plain_random_trajectory(seed, length, num_samples=2000):
    """Section 1 with its own draws, taken one at a time in the order the pseudo-code reads them.

    Uses Python's ``random.Random`` (not NumPy), so that it shares no code with the library.
    """
    draw = random.Random(seed)
    anxiety = 0.01 * draw.random()
    centripetal = 0.7 * draw.random()
    gaussian = 10 * draw.random()
    freq = 0.2 * draw.random()
    angle = 2 * math.pi * draw.random()
    step = length / (num_samples - 1)
    v = cmath.exp(1j * angle) * anxiety if anxiety > 0 else cmath.exp(1j * angle) * step
    x = [0j]
    shakes = 0
    for t in range(num_samples - 1):
        if draw.random() < freq * anxiety:
            shake = 2 * v * cmath.exp(1j * (math.pi + draw.random() - 0.5))
            shakes += 1
        else:
            shake = 0j
        push = complex(draw.gauss(0, 1), draw.gauss(0, 1))
        v = v + shake + anxiety * (gaussian * push - centripetal * x[t]) * step
        v = v / abs(v) * step
        x.append(x[t] + v)
    return x, shakes


def plain_psf(positions, psf_size, exposure):
    """Section 2: weights, centre-of-mass centring, bilinear splatting, division by N.

    Returns a list of rows, or None when an exposed sample falls off the grid.
    """
    n = len(positions)
    weights = [min(max(exposure * n - t, 0.0), 1.0) for t in range(n)]
    total = sum(weights)
    com = sum(w * p for w, p in zip(weights, positions, strict=True)) / total
    centre = psf_size // 2
    kernel = [[0.0] * psf_size for _ in range(psf_size)]
    for w, p in zip(weights, positions, strict=True):
        if w == 0:
            continue
        col = p.real - com.real + centre
        row = p.imag - com.imag + centre
        if col < 0 or row < 0 or col > psf_size - 1 or row > psf_size - 1:
            return None
        j, i = math.floor(col), math.floor(row)
        fc, fr = col - j, row - i
        for di, wr in ((0, 1 - fr), (1, fr)):
            for dj, wc in ((0, 1 - fc), (1, fc)):
                if wr * wc > 0:
                    kernel[i + di][j + dj] += w * wr * wc
    return [[value / n for value in row] for row in kernel]
