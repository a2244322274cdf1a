"""Source types, in one table: a ``type:`` name → its config model and its factory.

Adding a source is one new module with a ``from_config(name, cfg, clock)`` factory, its
config model here and one row in SOURCE_TYPES. Factories are named by import path and
imported only when a source of that type is made, so reading config never loads CCXT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from candlekeep.core.timeutil import parse_duration
from candlekeep.sources.binance_archive.paths import DEFAULT_BASE_URL
from candlekeep.sources.circuit import CircuitConfig

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceModel(_Model):
    """What every source type's config has."""

    circuit: CircuitConfig | None = None
    """Circuit breaker keys over the type's defaults (``sources.circuit.CIRCUIT_DEFAULTS``)."""


class RateLimitConfig(_Model):
    weight: int = Field(gt=0, description="weight budget per window")
    window: Duration = 60.0


class BulkConfig(_Model):
    """Bulk history from Binance's public-data archive (spot, USDⓈ-M and COIN-M sources).

    Backfill takes past months and days from the archive's ZIPs and only the rest through
    REST; ``base_url`` points at a mirror, a proxy or the simulated exchange."""

    enabled: bool = True
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = Field(default=4, ge=1, le=64, description="parallel downloads")
    timeout: Duration = 120.0


class CcxtSourceConfig(_SourceModel):
    type: Literal["ccxt"]
    exchange: str
    market_type: Literal["spot", "swap", "future"] = "spot"
    base_url: str | None = None
    max_requests_per_second: float | None = Field(default=None, gt=0)
    rate_limit: RateLimitConfig | None = None
    timeout: Duration = 10.0
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_concurrent_jobs: int | None = Field(default=None, ge=1)
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    password: SecretStr | None = None
    bulk: BulkConfig | None = None

    @field_validator("api_key", "secret", "password", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v


class SimSourceConfig(_SourceModel):
    type: Literal["sim"]
    seed: int = 7
    symbols: list[str] | None = None
    """Markets it lists (listed since 2017-01-01); default BTC, ETH, BNB and SOL in USDT."""
    max_concurrent_jobs: int | None = Field(default=None, ge=1)


HYPERLIQUID_TIMEFRAMES = frozenset({"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h",
                                    "12h", "1d"})
"""Hyperliquid's candle intervals that candlekeep's timeframes share. Hyperliquid also has
3d and 1M (no candlekeep timeframe) and 1w, whose candles open on Thursdays (weeks counted
from the epoch), off candlekeep's Monday grid: validation would reject every one."""

HYPERLIQUID_MAINNET = "https://api.hyperliquid.xyz"
HYPERLIQUID_TESTNET = "https://api.hyperliquid-testnet.xyz"


class HyperliquidSourceConfig(_SourceModel):
    """Hyperliquid's own API (``POST /info``): candles of perps and spot, market contexts,
    funding, and the account data of wallets listed under ``accounts:``."""

    type: Literal["hyperliquid"]
    base_url: str | None = None
    """Default mainnet (or testnet with ``testnet: true``); a proxy or the sim otherwise."""
    testnet: bool = False
    timeout: Duration = 10.0
    max_attempts: int = Field(default=5, ge=1, le=20)
    weight_per_minute: int = Field(default=1200, gt=0)
    """Hyperliquid's per-IP budget; lower it when other tools share the address."""
    max_concurrent_jobs: int | None = Field(default=None, ge=1)

    @property
    def url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return HYPERLIQUID_TESTNET if self.testnet else HYPERLIQUID_MAINNET


class CoinGeckoSourceConfig(_SourceModel):
    """CoinGecko's REST API: aggregated prices, market caps, 24 h volumes and OHLC of coins,
    read by the ``coingecko_prices`` job (not by ``series:``: CoinGecko has no exchange
    candles)."""

    type: Literal["coingecko"]
    plan: Literal["demo", "pro"] = "demo"
    """Picks the host (api. or pro-api.coingecko.com) and the key header."""
    api_key: SecretStr | None = None
    """Demo or pro key (``${COINGECKO_API_KEY}``); none: keyless, IP-limited, demo host."""
    base_url: str | None = None
    """Replaces the plan's root URL (``…/api/v3``): a proxy or the sim."""
    timeout: Duration = 10.0
    max_attempts: int = Field(default=5, ge=1, le=20)
    calls_per_minute: int | None = Field(default=None, gt=0)
    """Unset: the plan's published budget (demo 30, pro 250, keyless 5), lowered when
    CoinGecko enforces less (adaptive). Set (e.g. 500 on the Analyst plan): fixed."""
    max_concurrent_jobs: int | None = Field(default=None, ge=1)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v


@dataclass(frozen=True, slots=True)
class SourceType:
    config: type[BaseModel]
    factory: str
    """``module:Class`` whose ``from_config(name, cfg, clock)`` makes the source."""


SOURCE_TYPES: dict[str, SourceType] = {
    "ccxt": SourceType(CcxtSourceConfig, "candlekeep.sources.ccxt_source:CcxtSource"),
    "sim": SourceType(SimSourceConfig, "candlekeep.sources.sim_source:SimSource"),
    "hyperliquid": SourceType(HyperliquidSourceConfig,
                              "candlekeep.sources.hyperliquid.source:HyperliquidSource"),
    "coingecko": SourceType(CoinGeckoSourceConfig,
                            "candlekeep.sources.coingecko.source:CoinGeckoSource"),
}

__all__ = ["SOURCE_TYPES", "BulkConfig", "CcxtSourceConfig", "CoinGeckoSourceConfig",
           "HyperliquidSourceConfig",
           "RateLimitConfig", "SimSourceConfig", "SourceType"]
