"""Options: the library's refusal names the field and the reason apart, in its own words (field
names, not command-line flags), for any caller."""

from __future__ import annotations

import pytest
from csb_generator.modes import OptionError, resolve_options


@pytest.mark.parametrize(
    ("mode", "given", "option", "reason"),
    [
        ("random", {"channels": 2}, "channels", "must be 1 or 3, got 2"),
        ("shaky", {}, "mode", "must be one of fixed, random, noisy, tsweep, got 'shaky'"),
        (
            "random",
            {"psf_size": 16, "length": 40},
            "length",
            "a 40 px trajectory does not fit a 16 px kernel (at most 14 px); "
            "raise `psf_size` or lower `length`",
        ),
        (
            "random",
            {"lams": (1000.0,)},
            "lams/sigmas",
            "random mode is noiseless; use noisy mode for noise",
        ),
        (
            "noisy",
            {"blurred_dtype": "int8"},
            "blurred_dtype",
            "must be one of float32, float16, uint8, uint16",
        ),
    ],
)
def test_a_refused_option_carries_its_name_and_its_reason(mode, given, option, reason):
    with pytest.raises(OptionError) as caught:
        resolve_options(mode, **given)
    assert (caught.value.option, caught.value.reason) == (option, reason)
    assert str(caught.value) == f"{option}: {reason}"
