"""The state DB's schema version, apart from the table definitions (and SQLAlchemy), so a
light reader can tell whether a state DB is current."""

SCHEMA_VERSION = 5
"""Bumped whenever a table gains a column or an index; ``StateDB`` then adds what an older
state DB lacks (see ``state.migrate``)."""
