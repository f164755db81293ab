"""The Batcher groups writes that arrive together and hands each caller its own result or error."""

from __future__ import annotations

import asyncio

import pytest

from shared.batching import Batcher


async def test_calls_arriving_while_a_flush_runs_share_the_next_flush() -> None:
    flushes: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushes.append(items)
        await release.wait()
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # let the first flush start with item 1 alone
    await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert [await task for task in later] == [20, 30, 40]
    assert flushes == [[1], [2, 3, 4]]


async def test_a_failed_flush_fails_every_caller_in_it_and_the_next_flush_still_runs() -> None:
    async def flush(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("database said no")
        return items

    batcher: Batcher[str, str] = Batcher(flush)
    results = await asyncio.gather(batcher.submit("bad"), batcher.submit("good"), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert await batcher.submit("good") == "good"


async def test_max_size_splits_a_large_group() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[None]:
        sizes.append(len(items))
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(flush, max_size=4)
    assert await batcher.submit_all(range(10)) == [None] * 10
    assert sizes == [4, 4, 2]


async def test_a_result_count_mismatch_is_an_error_not_a_silent_drop() -> None:
    async def flush(items: list[int]) -> list[int]:
        return []

    with pytest.raises(ValueError):
        await Batcher(flush).submit(1)
