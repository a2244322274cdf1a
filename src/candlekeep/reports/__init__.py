"""E-mail reports: pluggable sections (sections.py, built-ins in builtin.py), read by
collect.py, rendered by render.py, sent and kept by mailer.py and outbox.py."""
