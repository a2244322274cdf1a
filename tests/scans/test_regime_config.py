"""Config errors for universes, scan profiles and regime thresholds name the valid
choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from candlekeep.config import parse_config
from candlekeep.core.errors import ConfigError

BASE: dict[str, Any] = {"stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
                        "sources": {"sim": {"type": "sim", "seed": 7}}}


@pytest.mark.parametrize(("extra", "key", "says"), [
    ({"regime": {"volatility": {"calm": 0.2, "volatile": 0.5, "middle": 1}}},
     "regime.volatility.middle", "valid keys: calm, volatile"),
    ({"regime": {"breath": {"calm": 0.7, "volatile": 0.2}}},
     "regime.breath", "valid keys: volatility, above_ma, breadth, refresh"),
    ({"scans": {"profiles": {"hot": {"min_scor": 80}}}}, "scans.profiles.hot.min_scor",
     "valid keys: min_score, min_vadr, max_spread_bps, min_depth_usd"),
    ({"scans": {"profiles": {"cold": {"min_score": 80}}}}, "scans.profiles.cold",
     "valid profiles: hot, warm, custom (premove: scans.premove)"),
    ({"regime": {"volatility": {"calm": 0.5, "volatile": 0.5}}}, "regime.volatility",
     "calm (0.5) must be below volatile (0.5)"),
    ({"regime": {"above_ma": {"calm": 0.4, "volatile": 0.45}}}, "regime.above_ma",
     "calm (0.4) must be above volatile (0.45)"),
    ({"universes": {"u": {"source": "nope", "symbols": ["BTC/USDT"]}}}, "universes.u.source",
     "defined sources: sim"),
    ({"universes": {"u": {"source": "sim", "store": "other", "top": {"n": 5}}}},
     "universes.u.store", "defined stores: main"),
    ({"universes": {"u": {"source": "sim", "symbols": ["BTC/USDT"]}},
      "jobs": [{"name": "r", "type": "regime", "params": {"universe": "v"}}]},
     "jobs[0].params.universe", "defined universes: u"),
])
def test_config_errors_name_the_valid_choices(extra: dict[str, Any], key: str,
                                               says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE | extra, "c.yaml", Path("/tmp"))
    assert err.value.key == key
    assert says in str(err.value)


def test_a_valid_scans_config_loads() -> None:
    cfg = parse_config(BASE | {
        "universes": {"top": {"source": "sim", "top": {"n": 20, "days": 7}}},
        "regime": {"breadth": {"calm": 0.65, "volatile": 0.25}},
        "scans": {"profiles": {"hot": {"min_score": 80}, "custom": {"min_vadr": 2}}},
        "jobs": [{"name": "r", "type": "regime", "params": {"universe": "top"}}]},
        "c.yaml", Path("/tmp"))
    assert cfg.regime.breadth.calm == 0.65 and cfg.scans.gates("hot").min_vadr == 1.8
