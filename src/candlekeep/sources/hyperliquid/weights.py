"""Hyperliquid's published request weights, as data.

Source: "Rate limits and user limits",
https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/rate-limits —
REST requests share an aggregated weight limit of 1200 per minute per IP; ``/info``
requests weigh 2 (l2Book, allMids, clearinghouseState, orderStatus, spotClearinghouseState,
exchangeStatus), 60 (userRole) or 20 (every other documented type); some types cost one
more weight per 20 items in the reply, candleSnapshot one more per 60.

The base weight is known before sending; the item weight only once the reply is counted,
so the client books the first before the request and the second after it.
"""

from __future__ import annotations

WEIGHT_PER_MINUTE = 1200
"""The per-IP budget for REST requests, per minute."""

LIGHT_INFO_TYPES = frozenset({"l2Book", "allMids", "clearinghouseState", "orderStatus",
                              "spotClearinghouseState", "exchangeStatus"})
LIGHT_WEIGHT = 2
USER_ROLE_WEIGHT = 60
DEFAULT_WEIGHT = 20

ITEMS_PER_WEIGHT: dict[str, int] = {
    **dict.fromkeys(("recentTrades", "historicalOrders", "userFills", "userFillsByTime",
                     "fundingHistory", "userFunding", "nonUserFundingUpdates", "twapHistory",
                     "userTwapSliceFills", "userTwapSliceFillsByTime", "delegatorHistory",
                     "delegatorRewards", "validatorStats"), 20),
    "candleSnapshot": 60,
}
"""Request types whose reply costs one more weight per this many items returned."""


MAX_ITEMS: dict[str, int] = {
    "historicalOrders": 2000, "userFills": 2000, "userFillsByTime": 2000,
    "fundingHistory": 500, "userFunding": 500, "candleSnapshot": 5000,
}
"""The most items one reply of these types returns (docs: 2,000 fills or orders, 500 per
time-range reply, 5,000 candles): the item weight reserved before sending."""


def worst_items_weight(info_type: str) -> int:
    """Item weight reserved up front, so that requests in flight together can never take a
    window past the budget once their replies are counted (types without a known page size
    reserve nothing and are charged on arrival)."""
    return items_weight(info_type, MAX_ITEMS.get(info_type, 0))


def base_weight(info_type: str) -> int:
    """The weight of an ``/info`` request before counting what it returns."""
    if info_type in LIGHT_INFO_TYPES:
        return LIGHT_WEIGHT
    if info_type == "userRole":
        return USER_ROLE_WEIGHT
    return DEFAULT_WEIGHT


def items_weight(info_type: str, items: int) -> int:
    """The extra weight of a reply holding ``items`` items: one per whole 20 (or 60 for
    candles); 0 for types charged per request only."""
    per = ITEMS_PER_WEIGHT.get(info_type)
    return items // per if per else 0


def charges_items(info_type: str) -> bool:
    return info_type in ITEMS_PER_WEIGHT


def candle_weight(candles: int) -> int:
    """A candleSnapshot returning ``candles`` candles."""
    return base_weight("candleSnapshot") + items_weight("candleSnapshot", candles)
