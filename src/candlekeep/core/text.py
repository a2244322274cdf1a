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


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages, logs and files.

    The user information ends at the last ``@``: an unencoded ``/``, ``?`` or ``#`` in the
    password makes urlsplit see no password at all, so it is not asked (a ``@`` later in the
    URL masks more than needed, never less)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (sep and at and colon):
        return url
    return f"{scheme}://{user}:***@{host}"


def snippet(text: str, size: int = 200) -> str:
    """``text`` on one line, cut at ``size`` characters: a reply body quoted in a message."""
    text = " ".join(text.split())
    return text if len(text) <= size else text[:size] + "…"
