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
