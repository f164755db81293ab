"""One pooled connection in one transaction whose jobs are published when it commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg

from shared.runtime import Runtime


@asynccontextmanager
async def write_transaction(runtime: Runtime) -> AsyncIterator[asyncpg.Connection]:
    """The domain rows and the jobs they cause commit together; publishing follows the commit."""
    async with runtime.pool.acquire() as proxy:
        connection = cast(asyncpg.Connection, proxy)  # the proxy forwards every Connection method
        async with runtime.client.transaction(connection):
            yield connection
