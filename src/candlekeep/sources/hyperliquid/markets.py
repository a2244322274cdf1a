"""Hyperliquid's markets from ``meta`` (perpetuals) and ``spotMeta`` (spot pairs).

Symbols are CCXT's unified ones, so a config moves between ``type: ccxt`` and
``type: hyperliquid`` unchanged: a perpetual is ``BTC/USDC:USDC`` and its request name (the
``coin`` of candleSnapshot, fundingHistory and fills) is ``BTC``; a spot pair is
``PURR/USDC`` (base and quote token names) requested as Hyperliquid names it: ``PURR/USDC``
for the first pair, ``@{index}`` for every other.

Precision follows "Tick and lot size"
(https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/tick-and-lot-size):
sizes have ``szDecimals`` decimals (a spot pair's are its base token's); prices have at most
5 significant figures and at most ``MAX_DECIMALS - szDecimals`` decimals (6 for perps, 8 for
spot), integer prices always allowed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("candlekeep.sources")

PERP_MAX_DECIMALS = 6
SPOT_MAX_DECIMALS = 8
PRICE_SIG_FIGS = 5
SPOT_ASSET_OFFSET = 10_000
"""A spot pair's asset id is 10000 + its index in spotMeta's universe."""

MarketKind = Literal["perp", "spot"]


class MetaError(ValueError):
    """``meta`` or ``spotMeta`` is not shaped as documented (the source rejects the reply)."""


@dataclass(frozen=True, slots=True)
class HlMarket:
    """One Hyperliquid market and what an order or a report needs to know about it."""

    symbol: str
    """Unified: ``BTC/USDC:USDC`` (perp) or ``PURR/USDC`` (spot)."""
    coin: str
    """The name requests use: ``BTC``, ``PURR/USDC`` or ``@1``."""
    kind: MarketKind
    asset: int
    """Order asset id: the perp's index in ``meta``; 10000 + index for spot."""
    sz_decimals: int
    base: str
    quote: str
    max_leverage: int | None = None
    active: bool = True

    @property
    def size_step(self) -> float:
        """The smallest size increment: 10^-szDecimals."""
        return 10.0 ** -self.sz_decimals

    @property
    def price_decimals(self) -> int:
        """Most decimals a price may have (perps 6 - szDecimals, spot 8 - szDecimals)."""
        top = PERP_MAX_DECIMALS if self.kind == "perp" else SPOT_MAX_DECIMALS
        return max(0, top - self.sz_decimals)

    def tick(self, price: float) -> float:
        """The price increment at ``price``: the coarser of 5 significant figures and
        ``price_decimals`` decimals, but never above 1 (integer prices are always valid)."""
        finest = 10.0 ** -self.price_decimals
        if not math.isfinite(price) or price <= 0:
            return finest
        sig = 10.0 ** (math.floor(math.log10(price)) - (PRICE_SIG_FIGS - 1))
        return min(1.0, max(sig, finest))


def perp_symbol(coin: str) -> str:
    return f"{coin}/USDC:USDC"


def parse_meta(meta: Any) -> list[HlMarket]:
    """The perpetuals of a ``meta`` reply (delisted ones ``active=False``)."""
    universe = _get(meta, "universe", list, "meta")
    out: list[HlMarket] = []
    for i, asset in enumerate(universe):
        name = _get(asset, "name", str, f"meta.universe[{i}]")
        sz = _decimals(asset, f"meta.universe[{i}] ({name})")
        lev = asset.get("maxLeverage")
        out.append(HlMarket(
            perp_symbol(name), name, "perp", i, sz, name, "USDC",
            int(lev) if isinstance(lev, int | float) and not isinstance(lev, bool) else None,
            active=asset.get("isDelisted") is not True))
    return out


def parse_spot_meta(spot_meta: Any) -> list[HlMarket]:
    """The spot pairs of a ``spotMeta`` reply, named by their tokens."""
    tokens_raw = _get(spot_meta, "tokens", list, "spotMeta")
    universe = _get(spot_meta, "universe", list, "spotMeta")
    tokens: dict[int, tuple[str, int]] = {}
    for i, token in enumerate(tokens_raw):
        where = f"spotMeta.tokens[{i}]"
        name = _get(token, "name", str, where)
        index = _get(token, "index", int, where)
        tokens[index] = (name, _decimals(token, f"{where} ({name})"))
    out: list[HlMarket] = []
    for i, pair in enumerate(universe):
        where = f"spotMeta.universe[{i}]"
        name = _get(pair, "name", str, where)
        index = _get(pair, "index", int, where)
        legs = _get(pair, "tokens", list, where)
        if len(legs) != 2 or not all(isinstance(t, int) and t in tokens for t in legs):
            raise MetaError(f"{where} ({name}): tokens {legs!r} are not two listed tokens")
        (base, sz), (quote, _) = tokens[legs[0]], tokens[legs[1]]
        out.append(HlMarket(f"{base}/{quote}", name, "spot", SPOT_ASSET_OFFSET + index, sz,
                            base, quote))
    return out


def by_symbol(markets: list[HlMarket]) -> dict[str, HlMarket]:
    """Markets keyed by unified symbol; a second pair with the same token names (possible
    for non-canonical spot tokens) keeps the first and is logged."""
    out: dict[str, HlMarket] = {}
    for m in markets:
        if m.symbol in out:
            log.info("hyperliquid: %s (%s) has the symbol of %s; keeping the first",
                     m.coin, m.symbol, out[m.symbol].coin)
            continue
        out[m.symbol] = m
    return out


def _get(obj: Any, key: str, type_: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise MetaError(f"{where}: expected an object, got {type(obj).__name__}")
    value = obj.get(key)
    if not isinstance(value, type_) or (type_ is int and isinstance(value, bool)):
        raise MetaError(f"{where}: {key!r} is {value!r}, expected {type_.__name__}")
    return value


def _decimals(obj: dict[str, Any], where: str) -> int:
    sz = _get(obj, "szDecimals", int, where)
    if not 0 <= sz <= SPOT_MAX_DECIMALS:
        raise MetaError(f"{where}: szDecimals {sz} outside 0..{SPOT_MAX_DECIMALS}")
    return int(sz)


__all__ = ["HlMarket", "MetaError", "by_symbol", "parse_meta", "parse_spot_meta",
           "perp_symbol"]
