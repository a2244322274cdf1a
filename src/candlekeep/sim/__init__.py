"""A simulated exchange: deterministic candles with scripted holes, late data, rate limits
and faults, in-process (SimExchange) and over HTTP in Binance's REST format (server)."""

from candlekeep.sim.exchange import Faults, Hole, HoleSpec, SimExchange, TransientSpec
from candlekeep.sim.generator import CandleGenerator, generate_candles

__all__ = [
    "CandleGenerator",
    "Faults",
    "Hole",
    "HoleSpec",
    "SimExchange",
    "TransientSpec",
    "generate_candles",
]
