"""``seg-explain``: segment and explain from the command line (see :mod:`.main` for the forms)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
