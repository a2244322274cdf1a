"""The simulated exchange speaking Hyperliquid's ``POST /info`` (markets and accounts).

``HyperliquidSim(exchange, HyperliquidSpec(...))`` is mounted by the sim server
(``run_in_thread(exchange, hyperliquid=sim)``) and answers the truth a test compares with;
``spec`` holds the markets, accounts and Hyperliquid's published weights and page sizes,
``accounts`` the deterministic trading model, ``wire`` the JSON formats.
"""
