"""The remote tests share the SeaweedFS fixture of test_s3_roundtrip (this folder)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
