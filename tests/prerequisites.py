"""What a test does when something it needs from outside the repository is missing.

A downloaded fixture or an operating-system package may be absent on a developer's machine, and
the test then skips, saying how to get it. Under CI (``CI`` set) the same test fails instead, so
that a missing prerequisite can never turn a real check into a silent skip there.
"""

from __future__ import annotations

import os

import pytest


def missing_prerequisite(message: str) -> None:
    """Skip the running test with ``message``; under CI, fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} Under CI this test must not be skipped.", pytrace=False)
    pytest.skip(message)
