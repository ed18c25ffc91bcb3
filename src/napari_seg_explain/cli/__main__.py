"""``python -m napari_seg_explain.cli``: the same as ``seg-explain``."""

import sys

from .main import main

sys.exit(main())
