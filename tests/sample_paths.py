"""Where the shipped sample data lives (tests import this, not a conftest, whose module name is ambiguous)."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
