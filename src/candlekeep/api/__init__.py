"""The HTTP API: health, metrics, the read model as JSON, and the dashboard."""
