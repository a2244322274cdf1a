"""Answers kept for a moment: one computation per key however many ask at once, and a
failure is never kept."""

from __future__ import annotations

import asyncio

import pytest

from candlekeep.api.recent import Recent


async def test_concurrent_askers_share_one_answer_and_errors_are_not_kept() -> None:
    recent = Recent(keep_s=60)
    calls = 0
    gate = asyncio.Event()

    async def make() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"answer %d" % calls

    askers = [asyncio.ensure_future(recent.get("k", make)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*askers)) == {b"answer 1"} and calls == 1
    assert await recent.get("k", make) == b"answer 1"  # kept
    assert await recent.get("other", make) == b"answer 2"

    async def broken() -> bytes:
        raise RuntimeError("state DB down")

    with pytest.raises(RuntimeError):
        await recent.get("bad", broken)
    assert await recent.get("bad", make) == b"answer 3"  # the failure was not kept


async def test_answers_expire() -> None:
    recent = Recent(keep_s=0)
    count = iter(range(10))

    async def make() -> bytes:
        return str(next(count)).encode()

    assert [await recent.get("k", make) for _ in range(3)] == [b"0", b"1", b"2"]
