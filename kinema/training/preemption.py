"""Stopping a run between steps: SIGINT (Ctrl-C), SIGTERM (SLURM / Kubernetes preemption) and SIGUSR1
(SLURM's ``--signal``) set a flag instead of raising mid-step; the loop finishes the step, saves a
checkpoint of it and exits, so the resume is bit-exact. A second signal exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import torch

from kinema.dist import all_reduce_max_

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


class StopSignals:
    """The stop flag of one run: ``signum`` of the first stop signal, or None."""

    def __init__(self, announce: bool = True, distributed: bool = False, device: torch.device | None = None) -> None:
        self.announce, self.distributed, self.device = announce, distributed, device
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @contextlib.contextmanager
    def installed(self):
        """The handlers, for the duration of the block; the previous ones after. Only the main thread can
        install handlers; elsewhere signals keep their current behaviour."""
        self.signum = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None:
                    try:
                        previous[signum] = signal.signal(signum, self.on_signal)
                    except (ValueError, OSError):
                        pass
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:  # the second signal: leave now, by the signal's default action
            os.write(2, f"\nkinema: second {name}: exiting at once, without a checkpoint\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self.announce:  # os.write: print() could re-enter a stream tqdm is writing to
            os.write(2, f"\nkinema: {name}: finishing the current step, then saving a checkpoint "
                        f"(send it again to exit at once)\n".encode())

    def requested(self) -> bool:
        """Whether a stop signal arrived (on any process: they must all stop after the same step)."""
        signum = self.signum or 0
        if self.distributed:  # one tiny collective per step, only under torchrun
            flag = torch.tensor([float(signum)], device=self.device)
            signum = int(all_reduce_max_(flag).item())
            self.signum = signum or None
        return bool(signum)
