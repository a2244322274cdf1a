"""examples/hyperliquid.yaml parses, its jobs validate, and its dry run names every account;
its report sections resolve once they are registered."""

from __future__ import annotations

from pathlib import Path

import yaml

from candlekeep.config import parse_config
from candlekeep.config.source_types import HyperliquidSourceConfig
from candlekeep.config.store_types import BufferStoreConfig
from candlekeep.reports.sections import resolve, sections
from candlekeep.scheduler.validate import load_jobs

EXAMPLE = Path(__file__).parents[2] / "examples" / "hyperliquid.yaml"
ENV = {"CH_CLOUD_PASSWORD": "secret", "SMTP_PASSWORD": "secret"}
REPORT_SECTIONS = ["hyperliquid_targets", "hyperliquid_trades",
                   "hyperliquid_missing_positions"]


def test_the_example_parses_and_mirrors_the_fleet(tmp_path: Path) -> None:
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE), tmp_path, env=ENV)
    assert isinstance(cfg.sources["hl"], HyperliquidSourceConfig)
    assert [a.name for a in cfg.accounts] == ["fund-a", "fund-b"]
    buf = cfg.stores["buf"]
    assert isinstance(buf, BufferStoreConfig) and buf.targets == ["ch_local", "ch_cloud"]
    jobs = {j.name: j for j in load_jobs(cfg)}
    accounts = jobs["hl.accounts"]
    assert accounts.type == "hyperliquid_accounts"
    assert accounts.params.store == "buf" and accounts.params.markets  # type: ignore[attr-defined]
    assert accounts.trigger is not None and jobs["flush"].trigger is not None
    assert cfg.job("hl.accounts").schedule == "*/15 * * * *"  # type: ignore[union-attr]
    assert cfg.job("flush").schedule == "0 */3 * * *"  # type: ignore[union-attr]
    assert cfg.job("hl.report").schedule == "0 8 * * *"  # type: ignore[union-attr]
    assert cfg.timezone == "UTC"
    assert cfg.reports["hyperliquid"].sections == REPORT_SECTIONS
    # The report sections are built elsewhere: once registered, the report resolves.
    if all(name in sections() for name in REPORT_SECTIONS):
        assert [s.name for s in resolve(cfg, "hyperliquid")] == REPORT_SECTIONS
