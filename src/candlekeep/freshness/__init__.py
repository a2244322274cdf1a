"""Freshness: when stored data counts as stale (``rules``) and the check that judges every
configured series and dataset and records the verdicts (``check``)."""
