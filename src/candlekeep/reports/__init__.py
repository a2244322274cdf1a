"""E-mail reports: pluggable sections (sections.py), their built-ins (builtin.py), the
message (render.py) and the outbox that keeps what could not be sent (outbox.py)."""
