"""`make bench`: every benchmark under tests/benchmarks, figures printed."""

from __future__ import annotations

print("no benchmarks yet")
