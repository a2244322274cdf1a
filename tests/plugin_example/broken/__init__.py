"""Plug-in mistakes the registry must report (each module is one mistake)."""
