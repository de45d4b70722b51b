"""Real photographs for training beyond the built-in set: those that ship inside PyPI and Debian
packages, with their authors and licences.

The built-in set (`csb_generator.BUILTIN_PHOTOGRAPHS`) has eight training photographs once
the two test ones are held out. These add nine more, all camera photographs (no drawings, renders
or textures):

- ``pypi``: Grace Hopper's portrait from matplotlib's sample data (matplotlib is a dependency of
  diffdeblur, so it is always there).
- ``debian``: eight photographs from KDE's wallpapers, Debian package
  ``plasma-workspace-wallpapers`` (``sudo apt-get install plasma-workspace-wallpapers``). The
  package's other wallpapers are drawings or renders, except three left out on purpose:
  ``DarkestHour`` and ``summer_1am`` (long exposures that are almost flat gradients) and ``Kite``
  (a drawn kite pasted onto a photographed sky).

The wallpapers are 2560 × 1600 px; their copies are reduced with a Lanczos filter to at most
`MAX_SIDE` px, the scale of the built-in photographs, so that a 64 px crop holds a comparable
amount of scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: Longest side, in pixels, of a training copy.
MAX_SIDE = 1024

#: The extra photograph sets a script can ask for, each including the ones before it.
SELECTIONS = ("none", "pypi", "debian")

DEBIAN_PACKAGE = "plasma-workspace-wallpapers"
DEBIAN_WALLPAPERS = Path("/usr/share/wallpapers")
# Debian's copyright file for the package states GPL-2+ for all files (KDE Visual Design Group);
# each wallpaper's own metadata.json states LGPLv3 and its author.
_DEBIAN_LICENCE = "LGPL-3.0 (the wallpaper's metadata.json); GPL-2+ (Debian's copyright file)"


@dataclass(frozen=True)
class PackagedPhotograph:
    """A real photograph that ships inside a package.

    Attributes
    ----------
    name : str
        Short name; the training copy is ``<name>.png``.
    package : str
        Where it comes from, e.g. ``"matplotlib (PyPI)"``.
    author : str
        Photographer or rights holder.
    licence : str
        Licence as the package states it.
    path : Path
        The file inside the installed package.
    """

    name: str
    package: str
    author: str
    licence: str
    path: Path


def _matplotlib_sample(filename: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / filename


def _wallpaper(name: str, author: str) -> PackagedPhotograph:
    return PackagedPhotograph(
        name=f"kde-{name.lower()}",
        package=f"{DEBIAN_PACKAGE} (Debian)",
        author=author,
        licence=_DEBIAN_LICENCE,
        path=DEBIAN_WALLPAPERS / name / "contents" / "images" / "2560x1600.jpg",
    )


def pypi_photographs() -> tuple[PackagedPhotograph, ...]:
    """The photographs found inside PyPI packages this project installs anyway."""
    return (
        PackagedPhotograph(
            name="grace_hopper",
            package="matplotlib (PyPI)",
            author="U.S. Navy photograph (Commodore Grace M. Hopper, 1984)",
            licence="public domain (work of the U.S. federal government)",
            path=_matplotlib_sample("grace_hopper.jpg"),
        ),
    )


DEBIAN_PHOTOGRAPHS = (
    _wallpaper("BytheWater", "Maciej Wiklo"),
    _wallpaper("ColdRipple", "Risto Saukonpää"),
    _wallpaper("ColorfulCups", "Dmitri Popov"),
    _wallpaper("EveningGlow", "Ian Hex"),
    _wallpaper("FallenLeaf", "Martin Klapetek"),
    _wallpaper("Grey", "Sigi Sagi"),
    _wallpaper("OneStandsOut", "Risto Saukonpää"),
    _wallpaper("Path", "Risto Saukonpää"),
)


def extra_photographs(selection: str) -> tuple[PackagedPhotograph, ...]:
    """The packaged photographs of ``selection`` (one of `SELECTIONS`).

    Raises
    ------
    ValueError
        ``selection`` is unknown.
    FileNotFoundError
        A photograph of the selection is not installed; the message says what to install.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown photograph selection {selection!r}; choose from {SELECTIONS}")
    chosen: tuple[PackagedPhotograph, ...] = ()
    if selection in ("pypi", "debian"):
        chosen += pypi_photographs()
    if selection == "debian":
        chosen += DEBIAN_PHOTOGRAPHS
    missing = [p for p in chosen if not p.path.is_file()]
    if missing:
        names = ", ".join(str(p.path) for p in missing)
        hint = (
            f"install the Debian package: sudo apt-get install {DEBIAN_PACKAGE}"
            if any(p in DEBIAN_PHOTOGRAPHS for p in missing)
            else "reinstall matplotlib"
        )
        raise FileNotFoundError(f"photographs not found: {names}; {hint}")
    return chosen


def copy_for_training(photograph: PackagedPhotograph, folder: Path) -> Path:
    """Write ``photograph`` as an 8-bit RGB PNG into ``folder``, reduced to at most `MAX_SIDE`.

    The file appears under its final name only when complete. Returns its path.
    """
    target = folder / f"{photograph.name}.png"
    if target.exists():
        return target
    with Image.open(photograph.path) as image:
        image = image.convert("RGB")
        scale = MAX_SIDE / max(image.size)
        if scale < 1:
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.LANCZOS)
        partial = target.with_name(f".{target.name}.partial")
        image.save(partial, format="PNG")
    os.replace(partial, target)
    return target
