"""DVG's trigger step: with the GP-variance trigger the LSTM is not run on a step where the trigger fires, so
its hidden state is kept for the next step (official GPtrigger_gen, generate_frames.py:289-295); on other
steps, and on every step of the manual every_k trigger (:166-175), it advances."""

from __future__ import annotations

import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")

import kinema.models.dvg.model as dvg_module  # noqa: E402
from kinema.models.dvg import DVG, DVGConfig  # noqa: E402
from kinema.registry import build_dataclass  # noqa: E402

SMALL = {"resolution": 16, "channels": 1, "n_past": 3, "n_future": 5, "g_dim": 4, "nf": 8, "rnn_size": 16,
         "gp_inducing": 8, "gp_inducing_range": [-1.0, 1.0], "trigger_window": 8, "trigger_warmup": 4}


def record_lstm(model: DVG) -> list[tuple[list, list]]:
    """Spy on the LSTM: one ``(state in, state out)`` per call, in call order (call k: input frame k)."""
    calls = []
    forward = model.predictor.forward

    def spy(h, state):
        out, new = forward(h, state)
        calls.append((state, new))
        return out, new

    model.predictor.forward = spy
    return calls


def same(a: list, b: list, row: int) -> bool:
    """Do LSTM states ``a`` and ``b`` (lists of (h, c) per layer) agree on batch row ``row``?"""
    return all(torch.equal(x[row], y[row]) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def test_the_lstm_state_is_kept_on_a_gp_trigger_step_and_advanced_otherwise(monkeypatch):
    torch.manual_seed(0)
    model = DVG(build_dataclass(DVGConfig, SMALL, "model")).eval()
    # decisions start at frame 5 (3 context frames, warm-up 4 values): force the pattern per decision
    pattern = iter([[True, False], [False, False], [True, True], [False, True]])
    monkeypatch.setattr(dvg_module, "window_trigger", lambda past, v, k: torch.tensor(next(pattern)))
    calls = record_lstm(model)
    context = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    video, info = model.sample(model.sample_noise(2, torch.Generator().manual_seed(0)), frames=context,
                               n_future=5, return_info=True)
    # frames 3, 4 (warm-up) never fire; frames 5..7 follow the pattern
    fired = info["triggered"]
    assert fired.tolist() == [[False, False, True, False, True], [False, False, False, False, True]]
    assert len(calls) == 7  # one LSTM call per input frame 0..6 (its output is discarded on a trigger step)
    for k in range(len(calls) - 1):  # call k predicts frame k + 1; call k + 1 starts from the kept state
        state_in, state_out = calls[k]
        nxt = calls[k + 1][0]
        for row in range(2):
            trig = k + 1 >= 3 and bool(fired[row, k + 1 - 3])
            if trig:
                assert same(nxt, state_in, row), f"frame {k + 1}, row {row}: trigger step must keep the state"
                assert not same(nxt, state_out, row)
            else:
                assert same(nxt, state_out, row), f"frame {k + 1}, row {row}: the LSTM advances"
    # row 1 did not fire on frame 5, row 0 did: from frame 6 on their inputs to the LSTM differ
    assert not same(calls[5][0], calls[4][1], 0) and same(calls[5][0], calls[4][1], 1)


def test_the_manual_every_k_trigger_advances_the_lstm_on_every_step():
    torch.manual_seed(0)
    model = DVG(build_dataclass(DVGConfig, SMALL, "model")).eval()
    calls = record_lstm(model)
    context = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, info = model.sample(model.sample_noise(2, torch.Generator().manual_seed(0)), frames=context,
                           n_future=5, trigger="every_k", trigger_every=3, return_info=True)
    assert info["triggered"][:, [0, 3]].all() and info["triggered"].sum() == 4  # frames 3 and 6
    for k in range(len(calls) - 1):
        assert all(same(calls[k + 1][0], calls[k][1], row) for row in range(2)), k
