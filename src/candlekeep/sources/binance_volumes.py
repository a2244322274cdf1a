"""Which Binance kline columns are the volume and the quote volume, for REST and archive alike.

Spot and USDⓈ-M klines carry the base volume in column 5 and the quote volume in column 7.
COIN-M (inverse) klines count column 5 in contracts and put the base volume in column 7,
which is what CCXT reports as the volume; the quote (USD) volume is then contracts times the
contract size. One function serves the REST reply and the archive file, so the same candle
is stored the same way from either.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def binance_volumes(col5: pa.Array | pa.ChunkedArray, col7: pa.Array | pa.ChunkedArray,
                    contract_size: float | None) -> tuple[pa.Array | pa.ChunkedArray,
                                                          pa.Array | pa.ChunkedArray]:
    """``(volume, quote_volume)``; ``contract_size`` is given for inverse markets only."""
    if contract_size is None:
        return col5, col7
    return col7, pc.multiply(col5, pa.scalar(float(contract_size), pa.float64()))
