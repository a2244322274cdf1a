"""Text that any database accepts: what programs print is not always valid text."""

from __future__ import annotations

ERROR_LIMIT = 4000


def clean_text(text: str | None, limit: int = ERROR_LIMIT) -> str | None:
    """``text`` capped at ``limit`` characters, NUL bytes and lone surrogates replaced.

    PostgreSQL refuses NUL in text and lone surrogates cannot be encoded as UTF-8; one such
    character in a job's error once made a whole batch of finished runs unrecordable.
    """
    if text is None:
        return None
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")
