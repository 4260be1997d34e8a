"""Model specs the model tests run over: every registered model, plus each configured variant in params.yaml."""
from __future__ import annotations

import pytest
from helpers import ROOT

from salbench.models import MODELS
from salbench.params import load_params

MODEL_SPECS = [pytest.param({"arch": n}, id=n) for n in MODELS.names()] + [
    pytest.param(m["model"], id=f"params-{name}")
    for name, m in load_params(ROOT / "params.yaml")["train"]["models"].items() if m["model"].get("kwargs")]
