"""The simulated exchange speaking CoinGecko's REST API (demo and pro hosts).

``CoinGeckoSim(exchange, CoinGeckoSpec(...))`` is mounted by the sim server
(``run_in_thread(exchange, coingecko=sim)``) and answers the truth a test compares with;
``spec`` holds the coins, keys and CoinGecko's published rules (granularity, limits),
``model`` the deterministic data, ``wire`` the JSON and error bodies.
"""
