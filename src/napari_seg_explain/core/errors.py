"""Errors a user can act on. The CLI prints them as one ``error: ...`` line (exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""


class ImageReadError(UserError):
    """An image file could not be read."""


class ModelLoadError(UserError):
    """A model file or its model card could not be loaded."""


class IncompatibleInputError(UserError):
    """The model and the image (or RoI, or pool) do not fit together."""


class Cancelled(Exception):
    """Raised inside a running explainer when the caller asked it to stop."""


class OutOfMemory(UserError):
    """The device ran out of memory on a batch (the engine halves the batch and retries)."""
