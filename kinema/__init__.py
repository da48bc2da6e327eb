"""kinema: train, sample and evaluate video generative models."""

__version__ = "0.1.0"
