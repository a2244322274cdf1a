"""What the simulated Hyperliquid lists and who trades on it: markets, accounts, limits.

Everything here is plain frozen data so a test builds one spec, hands it to the sim and
computes the expected replies from the same spec. Addresses are 42-character ``0x`` hex,
lower case, as Hyperliquid prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from candlekeep.core.timeutil import to_ms
from candlekeep.sim.generator import stable_hash64

ADDRESS_RE = re.compile(r"^0[xX][0-9a-fA-F]{40}$")
"""A user address: ``0x`` and 40 hex digits (Hyperliquid's ``^0[xX][0-9a-fA-F]+$``, 42
characters long)."""

# Request weights, https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/rate-limits
WEIGHT_LIMIT_PER_MINUTE = 1200
"""REST requests share an aggregated weight limit of 1200 per minute per IP."""
LIGHT_INFO_TYPES = frozenset({"l2Book", "allMids", "clearinghouseState", "orderStatus",
                              "spotClearinghouseState", "exchangeStatus"})
LIGHT_INFO_WEIGHT = 2
USER_ROLE_WEIGHT = 60
DEFAULT_INFO_WEIGHT = 20
PER_20_ITEMS_TYPES = frozenset({
    "recentTrades", "historicalOrders", "userFills", "userFillsByTime", "fundingHistory",
    "userFunding", "nonUserFundingUpdates", "twapHistory", "userTwapSliceFills",
    "userTwapSliceFillsByTime", "delegatorHistory", "delegatorRewards", "validatorStats"})
"""Info types that cost one more weight per 20 items returned."""
PER_60_ITEMS_TYPES = frozenset({"candleSnapshot"})
"""Info types that cost one more weight per 60 items returned."""


def base_weight(info_type: str) -> int:
    """The weight of an ``/info`` request before counting the items it returns."""
    if info_type in LIGHT_INFO_TYPES:
        return LIGHT_INFO_WEIGHT
    if info_type == "userRole":
        return USER_ROLE_WEIGHT
    return DEFAULT_INFO_WEIGHT


def items_weight(info_type: str, items: int) -> int:
    """The extra weight of a reply with ``items`` elements (floor of items / 20 or / 60)."""
    if info_type in PER_20_ITEMS_TYPES:
        return items // 20
    if info_type in PER_60_ITEMS_TYPES:
        return items // 60
    return 0


# Page sizes and horizons, https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/info-endpoint
CANDLE_HORIZON = 5000
"""Only the most recent 5000 candles of a series are available."""
FILLS_PAGE = 2000
"""userFillsByTime returns at most 2000 fills per response..."""
FILLS_HORIZON = 10_000
"""...and only the 10000 most recent fills are available."""
TIME_RANGE_PAGE = 500
"""Responses that take a time range return 500 elements (fundingHistory, userFunding,
userNonFundingLedgerUpdates)."""
HISTORICAL_ORDERS_LIMIT = 2000
"""historicalOrders returns at most 2000 most recent historical orders."""

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "1w")
"""Hyperliquid's candle intervals that the sim serves (it also has 3d and 1M, which the
sim does not model: they are answered like an unknown interval)."""


@dataclass(frozen=True, slots=True)
class PerpSpec:
    """One perpetual of the first perp dex, as ``meta`` lists it."""

    name: str
    sz_decimals: int
    max_leverage: int

    @property
    def symbol(self) -> str:
        """The generator's (and candlekeep's unified) symbol: ``BTC/USDC:USDC``."""
        return f"{self.name}/USDC:USDC"


@dataclass(frozen=True, slots=True)
class SpotTokenSpec:
    """A spot token; every one but USDC trades against USDC in one pair."""

    name: str
    sz_decimals: int
    wei_decimals: int


DEFAULT_PERPS: tuple[PerpSpec, ...] = (
    PerpSpec("BTC", 5, 40), PerpSpec("ETH", 4, 25), PerpSpec("SOL", 2, 20),
    PerpSpec("XRP", 0, 20))
DEFAULT_SPOT_TOKENS: tuple[SpotTokenSpec, ...] = (
    SpotTokenSpec("PURR", 0, 5), SpotTokenSpec("HYPE", 2, 8), SpotTokenSpec("JEFF", 0, 5))


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """One wallet and how busy it is; its whole history follows from (seed, address, time).

    ``fills_per_day`` is the mean number of filled orders a day (each fills in one to three
    pieces), so an account makes about twice that many fills. ``start`` is when it first
    deposits ``initial_deposit`` USDC; nothing happens before. An account with
    ``fills_per_day=0`` and ``ledger_per_day=0`` has no activity at all: every user request
    answers with empty data.
    """

    address: str
    fills_per_day: float = 40.0
    ledger_per_day: float = 0.5
    coins: tuple[str, ...] = ("BTC", "ETH", "SOL")
    leverage: int = 5
    order_notional: float = 5_000.0
    initial_deposit: float = 100_000.0
    start: int | str = "2024-11-01"

    def __post_init__(self) -> None:
        if not ADDRESS_RE.match(self.address):
            raise ValueError(f"account address {self.address!r} is not 0x and 40 hex digits")
        object.__setattr__(self, "address", self.address.lower())

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def idle(self) -> bool:
        return self.fills_per_day <= 0 and self.ledger_per_day <= 0


@dataclass(frozen=True, slots=True)
class HyperliquidSpec:
    """The sim's Hyperliquid: markets, accounts, limits and random faults.

    ``listing`` is when every market's history starts (candles and funding rates).
    Random faults draw from ``fault_seed`` in request order, like the Binance sim's.
    """

    accounts: tuple[AccountSpec, ...] = ()
    perps: tuple[PerpSpec, ...] = DEFAULT_PERPS
    spot_tokens: tuple[SpotTokenSpec, ...] = DEFAULT_SPOT_TOKENS
    listing: int | str = "2023-01-01"
    weight_limit: int = WEIGHT_LIMIT_PER_MINUTE
    window_s: float = 60.0
    candle_horizon: int = CANDLE_HORIZON
    fills_page: int = FILLS_PAGE
    fills_horizon: int = FILLS_HORIZON
    time_range_page: int = TIME_RANGE_PAGE
    historical_orders_limit: int = HISTORICAL_ORDERS_LIMIT
    error_rate: float = 0.0
    error_status: int = 500
    truncate_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 0.5
    fault_seed: int = 0

    def __post_init__(self) -> None:
        seen: set[str] = set()
        perps = {p.name for p in self.perps}
        for account in self.accounts:
            if account.address in seen:
                raise ValueError(f"account {account.address} is listed twice")
            seen.add(account.address)
            unknown = sorted(set(account.coins) - perps)
            if unknown:
                raise ValueError(f"account {account.address} trades {unknown}, which the "
                                 f"sim does not list; perps: {sorted(perps)}")

    @property
    def listing_ms(self) -> int:
        return to_ms(self.listing)

    def perp(self, name: str) -> PerpSpec | None:
        for p in self.perps:
            if p.name == name:
                return p
        return None

    def account(self, address: str) -> AccountSpec | None:
        address = address.lower()
        for a in self.accounts:
            if a.address == address:
                return a
        return None


def derive_addresses(seed: int, n: int) -> list[str]:
    """``n`` distinct addresses derived from ``seed`` (the same list every time)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        digits = "".join(f"{stable_hash64('hl-address', seed, i, k):016x}" for k in range(3))
        address = "0x" + digits[:40]
        if address not in out:
            out.append(address)
        i += 1
    return out


def demo_spec(seed: int = 7, n_accounts: int = 3, *, idle: int = 1,
              start: int | str = "2024-11-01", fills_per_day: float = 40.0) -> HyperliquidSpec:
    """A spec with ``n_accounts`` busy accounts and ``idle`` accounts with no activity."""
    addresses = derive_addresses(seed, n_accounts + idle)
    accounts = [AccountSpec(a, fills_per_day=fills_per_day, start=start)
                for a in addresses[:n_accounts]]
    accounts += [AccountSpec(a, fills_per_day=0.0, ledger_per_day=0.0, start=start)
                 for a in addresses[n_accounts:]]
    return HyperliquidSpec(accounts=tuple(accounts))
