"""Packaging and start-up: the wheel holds every module and the shipped configs, and ``import kinema``,
the CLI parser and ``import kinema.api`` leave the heavy optional imports (ODE / SDE solvers, scipy,
TensorBoard, W&B, PyAV, the model families) until they are used.

The import checks run in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kinema"

# Costly imports a start-up path must not pay for (each measured at 50 ms to 0.5 s; docs/benchmarks.md).
HEAVY = ("torchsde", "torchdiffeq", "scipy", "tensorboard", "wandb", "av", "gpytorch", "h5py", "sklearn")


def _modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after a fresh interpreter runs ``code`` (with this checkout first on the path)."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**_environ(), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _top(modules: set[str], names) -> list[str]:
    return sorted(name for name in names if name in modules)


def test_import_kinema_and_building_the_parser_import_no_torch():
    modules = _modules_after("import kinema, kinema.cli\nparser = kinema.cli.build_parser()\nparser.format_help()")
    assert _top(modules, ("torch", "numpy", *HEAVY)) == [], "kinema --help must not import these"
    assert "kinema.registry" not in modules


def test_import_kinema_api_defers_solvers_scipy_loggers_and_families():
    modules = _modules_after("import kinema.api")
    assert _top(modules, HEAVY) == []
    families = sorted(m for m in modules if m.startswith(("kinema.models.", "kinema.objectives.")))
    assert families == ["kinema.models.base", "kinema.objectives.base"], "a family was imported before it was used"


def test_building_one_family_imports_only_that_family():
    modules = _modules_after("from kinema.registry import build_model, load_config\n"
                             "build_model(load_config('tganv2_tiny').model)")
    families = {m.split(".")[2] for m in modules if m.startswith("kinema.models.") and m.count(".") >= 2}
    assert families == {"base", "tganv2"}
    assert _top(modules, HEAVY) == []  # tganv2_tiny's temporal generator is conv1d: no solver


def test_an_ode_generator_imports_its_solver_when_it_integrates():
    modules = _modules_after("import torch\nfrom kinema.nn.temporal import TemporalConfig, build_temporal\n"
                             "gen = build_temporal(TemporalConfig(kind='ode', hidden=4), 4, 3)\n"
                             "import sys; assert 'torchdiffeq' not in sys.modules\n"
                             "gen(torch.zeros(1, 4))")
    assert "torchdiffeq" in modules and "torchsde" not in modules


def _expected_files() -> set[str]:
    """Every module and shipped config of the source tree, as wheel paths."""
    files = {p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    files |= set((PACKAGE / "configs").glob("*.toml"))
    return {p.relative_to(ROOT).as_posix() for p in files}


def _can_build_offline() -> str | None:
    """Why a wheel cannot be built here without the network, or None. ``--no-build-isolation`` uses the
    installed setuptools (>= 70.1 writes wheels itself; older ones need the ``wheel`` package)."""
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed (pip wheel --no-build-isolation needs it)"
    import setuptools

    version = tuple(int(x) for x in setuptools.__version__.split(".")[:2] if x.isdigit())
    if version < (68, 0):
        return f"setuptools {setuptools.__version__} is older than pyproject.toml's build requirement (>= 68)"
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {setuptools.__version__} needs the wheel package to build wheels"
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package sources (the build writes build/ and *.egg-info beside them)."""
    reason = _can_build_offline()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "kinema", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", "-w", str(root / "dist")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (found,) = (root / "dist").glob("kinema-*.whl")
    return found


def test_wheel_holds_every_module_and_config(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = z.read(info).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    missing = sorted(_expected_files() - names)
    assert not missing, f"the wheel lacks {len(missing)} file(s), e.g. {missing[:5]}"
    assert any(n.startswith("kinema/configs/tganv2_tiny") for n in names)
    assert "kinema = kinema.cli:main" in entry_points
    assert "Requires-Python: >=3.11" in metadata  # kinema.config uses tomllib
    stray = sorted(n for n in names if not n.startswith(("kinema/", "kinema-")))
    assert not stray, f"the wheel installs files outside the kinema package: {stray[:5]}"


def test_installed_wheel_runs_from_outside_the_source_tree(wheel, tmp_path):
    """Installed into a venv that sees this environment's packages (torch, ...) but not the checkout:
    ``kinema --help`` and ``kinema configs`` find everything they need inside the installed package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # no pip in the venv (faster): this environment's pip installs into it with --python (pip >= 22.3)
    # --force-reinstall: pip skips a wheel whose version it finds installed already (this environment's
    # editable kinema, seen through --system-site-packages)
    env = _environ()
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                             "--no-index", "--force-reinstall", "-q", str(wheel)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    where = subprocess.run([str(python), "-c", "import kinema; print(kinema.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    script = venv / "bin" / "kinema"
    help_run = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=120)
    assert help_run.returncode == 0 and "configs" in help_run.stdout, help_run.stderr
    configs = subprocess.run([str(script), "configs"], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=300)
    assert configs.returncode == 0, configs.stderr
    shipped = {p.stem for p in (PACKAGE / "configs").glob("*.toml")}
    assert {line.split()[0] for line in configs.stdout.splitlines() if line.strip()} == shipped
