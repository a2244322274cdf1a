"""Hyperliquid's own API (``POST /info``): markets, candles, market contexts, funding.

``client`` sends one ``/info`` request paced by Hyperliquid's published weights,
``weights`` holds those weights, ``markets`` reads ``meta``/``spotMeta``, ``source`` is the
candle source (``type: hyperliquid``) with the market-data tables the accounts job stores.
"""
