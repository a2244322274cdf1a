"""CoinGecko's coin list and what a configured coin name resolves to.

CoinGecko keys everything by coin id (``bitcoin``); tickers are not unique (``eth`` is
Ethereum and a bridged copy of it, and real lists hold many more such clashes). A
configured coin is taken as an id when one matches, else as a symbol with exactly one
coin; an ambiguous symbol is refused with its candidates, so that nobody stores a copy-cat
token's prices under the name of the coin they meant.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Coin:
    id: str
    symbol: str
    name: str


class CoinResolveError(ValueError):
    """A configured coin that names no coin, or more than one."""


class CoinIndex:
    """The coin list, by id and by lower-case symbol."""

    def __init__(self, coins: list[Coin]) -> None:
        self.by_id = {c.id: c for c in coins}
        self.by_symbol: dict[str, list[Coin]] = {}
        for c in coins:
            self.by_symbol.setdefault(c.symbol.lower(), []).append(c)

    @classmethod
    def parse(cls, reply: Any) -> CoinIndex:
        """``/coins/list``'s reply; ValueError naming the first malformed entry."""
        if not isinstance(reply, list):
            raise ValueError(f"expected a list of coins, got {type(reply).__name__}")
        coins = []
        for i, row in enumerate(reply):
            if not (isinstance(row, dict) and all(isinstance(row.get(k), str)
                                                  for k in ("id", "symbol", "name"))):
                raise ValueError(f"coin #{i} lacks a string id, symbol or name: {row!r:.120}")
            coins.append(Coin(row["id"], row["symbol"], row["name"]))
        return cls(coins)

    def unambiguous_symbols(self) -> dict[str, Coin]:
        return {s: cs[0] for s, cs in self.by_symbol.items() if len(cs) == 1}

    def resolve(self, wanted: str) -> Coin:
        """The coin ``wanted`` names (an id first, else a symbol of exactly one coin)."""
        coin = self.by_id.get(wanted)
        if coin is not None:
            return coin
        matches = self.by_symbol.get(wanted.lower(), [])
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(f"{c.id} ({c.name})" for c in matches[:20])
            more = f" and {len(matches) - 20} more" if len(matches) > 20 else ""
            raise CoinResolveError(f"symbol {wanted!r} is ambiguous on CoinGecko: "
                                   f"candidates {listed}{more}; write the coin id instead")
        close = difflib.get_close_matches(wanted.lower(), [*self.by_id, *self.by_symbol], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CoinResolveError(f"CoinGecko lists no coin id or symbol {wanted!r}{hint}")


__all__ = ["Coin", "CoinIndex", "CoinResolveError"]
