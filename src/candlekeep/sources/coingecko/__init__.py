"""CoinGecko (``type: coingecko``): aggregated coin prices, market caps, 24 h volumes and
OHLC, into datasets of their own (``datasets``), never ``candles``."""
