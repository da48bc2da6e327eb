"""kinema's version, on the bottom floor: the package face (``kinema.__version__``) and the files kinema
writes (a prepared cache's ``meta.json``) read it here; keep it equal to ``version`` in pyproject.toml."""

__version__ = "0.1.0"
