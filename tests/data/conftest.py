"""The data tests import their fabricated task from data_helpers (this folder)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
