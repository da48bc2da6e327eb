"""The errors a user sees, one home for all of them (this module imports nothing).

Each is raised with a message that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2.
"""


class ConfigError(ValueError):
    """A config file, override or value is invalid; the message says which key and how to fix it."""


class CheckpointError(RuntimeError):
    """A checkpoint path is missing, incomplete or of an unexpected kind."""


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class SamplingError(ValueError):
    """A sampling option the model does not support, or a bad value for one."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (SIGINT, SIGTERM, SIGUSR1) after finishing its step and saving a
    checkpoint. A KeyboardInterrupt, so ``except KeyboardInterrupt`` still catches Ctrl-C; ``exit_code``
    is the shell convention 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
