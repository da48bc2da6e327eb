"""Optional Weights & Biases logging (train.wandb), tested in its offline mode: no network, no account."""

from __future__ import annotations

import sys
import time

import pytest
from tiny import tiny_run_config

from kinema.errors import ConfigError
from kinema.training import Trainer

wandb = pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def private_wandb_home(tmp_path, monkeypatch):
    """Keep W&B's settings and caches out of the user's home."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def offline_runs(out):
    return sorted((out / "wandb" / "wandb").glob("offline-run-*")) or sorted((out / "wandb").glob("offline-run-*"))


def records_of(run, key: bytes, timeout: float = 20.0) -> bytes:
    """The run's record file once it holds ``key``: W&B's service process may still be flushing it
    after ``finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = b"".join(p.read_bytes() for p in run.glob("*.wandb"))
        if key in records or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_offline_run_records_scalars_and_samples_and_resume_continues_it(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_run_config(steps=2, wandb="offline", wandb_project="kinema-test", lr_schedule="constant")
    Trainer(cfg, out, device="cpu", progress=False).fit()
    runs = offline_runs(out)
    assert len(runs) == 1, list(out.rglob("*"))[:20]
    run_id = (out / "wandb" / "kinema_run_id").read_text().strip()
    assert runs[0].name.endswith(run_id)
    for key in (b"train/loss_d", b"train/loss_g", b"samples"):
        assert key in records_of(runs[0], key), f"{key!r} not logged"
    assert list((runs[0] / "files" / "media" / "videos").glob("samples_*.gif")), "sample grid not logged"

    cfg.train.steps = 4
    Trainer(cfg, out, device="cpu", resume=True, progress=False).fit()
    runs = offline_runs(out)
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs), "a resume continues the same W&B run"


def test_wandb_off_by_default_and_missing_package_is_one_clear_error(tmp_path, monkeypatch):
    Trainer(tiny_run_config(steps=1), tmp_path / "plain", device="cpu", progress=False).fit()
    assert not (tmp_path / "plain" / "wandb").exists()
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match=r'train.wandb = "offline" needs the wandb package: pip install "kinema\[wandb\]"'):
        Trainer(tiny_run_config(steps=1, wandb="offline"), tmp_path / "w", device="cpu", progress=False).fit()


def test_unknown_wandb_mode_is_refused():
    with pytest.raises(ConfigError, match="train.wandb"):
        tiny_run_config(steps=1, wandb="cloud")
