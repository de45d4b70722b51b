"""``restore_targets`` and ``restore_files``: ``diffdeblur restore`` called from Python, on real
image files and a real (untrained) network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from csb_generator import BUILTIN_PHOTOGRAPHS, read_image, write_image
from diffdeblur import DeconvolutionConfig, DiffusionConfig, Restorer, restorer_config
from diffdeblur.restoration import ImageRestorer
from diffdeblur.restore_files import OutputExists, restore_files, restore_targets
from diffdeblur.samplers import SamplerSpec


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "blurred"
    folder.mkdir()
    astronaut = read_image(BUILTIN_PHOTOGRAPHS["astronaut"].path)
    camera = read_image(BUILTIN_PHOTOGRAPHS["camera"].path)
    write_image(folder / "colour.png", astronaut[50:91, 60:137])
    write_image(folder / "grey16.tif", camera[300:333, 10:45].astype(np.uint16) * 257)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_targets_keep_names_change_suffixes_and_refuse_what_would_lose_data(photos, tmp_path):
    out = tmp_path / "restored"
    pairs = restore_targets([photos], out)
    names = ("colour.png", "grey16.tif")
    assert pairs == [(photos / name, out / name) for name in names]
    as_png = restore_targets([photos / "grey16.tif"], out, output_format="png")
    assert as_png == [(photos / "grey16.tif", out / "grey16.png")]
    with pytest.raises(ValueError, match="would overwrite its own input"):
        restore_targets([photos / "colour.png"], photos)
    with pytest.raises(ValueError, match="would both be written to"):
        restore_targets([photos / "colour.png", photos / "colour.png"], out)
    with pytest.raises(ValueError, match=r"notes\.txt is not a PNG"):
        restore_targets([photos / "notes.txt"], out)
    with pytest.raises(ValueError, match=r"missing\.png does not exist"):
        restore_targets([photos / "missing.png"], out)
    out.mkdir()
    (out / "colour.png").write_bytes(b"a user's file")
    with pytest.raises(OutputExists) as caught:
        restore_targets([photos], out)
    assert caught.value.path == out / "colour.png"
    assert restore_targets([photos], out, overwrite=True) == pairs


def test_files_restore_as_the_image_restorer_does_and_a_bad_file_fails_alone(photos, tmp_path):
    config = restorer_config("residual", "tiny", diffusion=DiffusionConfig(timesteps=20))
    model = Restorer(config).eval()
    broken = photos / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    pairs = restore_targets([photos], tmp_path / "restored")
    sampler = SamplerSpec("ddim", steps=2)
    ticks, written, failed = [], [], []

    class Bar:
        def __init__(self, number, source, steps):
            self.name, self.steps = (number, source.name), steps

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self):
            ticks.append(self.name)

    restorer = ImageRestorer(model, patch_size=32, overlap=8, sampler=sampler)
    report = restore_files(
        restorer, pairs, seed=5, progress=Bar, written=written.append,
        failed=lambda source, reason: failed.append(source),
    )  # fmt: skip
    assert report.failed and report.failed[0][0] == broken and failed == [broken]
    expected_outputs = [tmp_path / "restored" / n for n in ("colour.png", "grey16.tif")]
    assert report.written == written == expected_outputs
    # The broken file is first in name order: it fails alone, the others keep their numbers.
    assert ticks == [(2, "colour.png")] * 2 + [(3, "grey16.tif")] * 2
    for source, target in pairs[1:]:
        expected = restorer.restore_image(
            read_image(source), generator=torch.Generator().manual_seed(5)
        )
        restored = read_image(target)
        assert restored.dtype == expected.dtype and restored.shape == expected.shape
        np.testing.assert_array_equal(restored, expected)


def test_a_model_that_needs_the_true_kernel_is_refused(tmp_path):
    pairs = [(tmp_path / "a.png", tmp_path / "out" / "a.png")]
    front = DeconvolutionConfig(kernel_size=17, kernel="true")
    non_blind = Restorer(restorer_config("regression", "tiny", deconvolution=front)).eval()
    with pytest.raises(ValueError, match="true kernel"):
        restore_files(ImageRestorer(non_blind, patch_size=32), pairs)
    assert not (tmp_path / "out").exists()
