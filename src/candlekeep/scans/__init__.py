"""Market scans on stored data: universes, order-book snapshots, regime, factor scans,
pre-movement gates, and the artifacts that explain them (issue 10)."""
