"""The findings tests import their synthetic results table from findings_synthetic.py (this folder)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
