"""`make bench` is not part of `make test`; this runs its harness with a tiny N so it cannot rot.

No figure is judged here (the machine is shared and busy): only that every system ran every phase,
the report was written, and that a job missing a history row fails the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.runtime import open_runtime
from tests.benchmarks.compare import ROWS, Config, run_bench
from tests.benchmarks.signups import SignupConfig
from tests.benchmarks.systems import HistoryMissing, Ours
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry


async def test_harness_measures_every_system_on_a_tiny_run(template_database: str, tmp_path: Path) -> None:
    config = Config(jobs=60, rounds=1, publishers=5, peer_threads=2, concurrency=10, latency_jobs=20,
                    delayed_jobs=5, delayed_ahead=(1.0, 2.0), batch=25,
                    signups=SignupConfig(signups=40, clients=4, warmup=4))
    report = await run_bench(config, out_dir=tmp_path, template=template_database)

    written = json.loads((tmp_path / f"{report['stamp']}.json").read_text())
    assert set(written["medians"]) == {"eventjobs", "celery", "dramatiq"}
    ours = written["medians"]["eventjobs"]
    assert ours["full_histories"] == 2 * 60 + 20 + 5  # N, N more by enqueue_many, latency and delayed jobs
    every = {key for key, _, _ in ROWS}
    assert every - {"enqueue_unconfirmed"} <= set(ours)
    for peer in ("celery", "dramatiq"):
        assert every - {"enqueue_many", "signups_per_s", "signup_p99_ms"} <= set(written["medians"][peer])


async def test_a_missing_history_row_fails_the_run(env: TestEnvironment) -> None:
    async with open_runtime(env.settings(), test_registry()) as runtime:
        ours = Ours(env, runtime, publishers=2, concurrency=2, log=Path("/dev/null"))
        await ours.enqueue(0, 3, confirms=True)
        with pytest.raises(HistoryMissing, match="0 of 3 jobs"):
            await ours.check_histories(3)  # never run: each has only `enqueued`
