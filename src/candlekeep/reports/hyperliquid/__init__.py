"""Report sections on Hyperliquid accounts (the account datasets of
``candlekeep.accounts.datasets``, in a configured store): targets versus actuals
(``hyperliquid_targets``), trades (``hyperliquid_trades``) and why a target has no
position (``hyperliquid_missing_positions``). Built in: registered with the others."""

from __future__ import annotations

from candlekeep.reports.hyperliquid import missing, targets, trades
from candlekeep.reports.sections import register_section

SECTIONS = (targets.SECTION, trades.SECTION, missing.SECTION)

for _section in SECTIONS:
    register_section(_section, builtin=True)
