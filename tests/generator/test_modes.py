"""Options: the library's refusal names the option and the reason apart, for any caller."""

from __future__ import annotations

import pytest
from csb_generator.modes import OptionError, resolve_options


@pytest.mark.parametrize(
    ("mode", "given", "option", "reason"),
    [
        ("random", {"channels": 2}, "--channels", "must be 1 or 3, got 2"),
        ("shaky", {}, "--mode", "must be one of fixed, random, noisy, tsweep, got 'shaky'"),
    ],
)
def test_a_refused_option_carries_its_name_and_its_reason(mode, given, option, reason):
    with pytest.raises(OptionError) as caught:
        resolve_options(mode, **given)
    assert (caught.value.option, caught.value.reason) == (option, reason)
    assert str(caught.value) == f"{option}: {reason}"
