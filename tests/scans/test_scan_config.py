"""Scan config a run would ignore is refused: premove's gates under scans.profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlekeep.config import parse_config
from candlekeep.core.errors import ConfigError


def test_premove_gates_under_profiles_point_to_scans_premove(tmp_path: Path) -> None:
    raw = {"stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
           "sources": {"sim": {"type": "sim", "seed": 7}},
           "scans": {"profiles": {"premove": {"min_score": 50}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, str(tmp_path / "c.yaml"), tmp_path)
    text = str(err.value)
    assert "scans.profiles.premove" in text and "set them under scans.premove" in text
    assert "funding_z, squeeze_quality, squeeze_max_depth_usd, accumulation_volume, " \
           "accumulation_momentum, needed" in text
