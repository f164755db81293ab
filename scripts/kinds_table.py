"""Print the README's job-kind table from the declarations (`python -m scripts.kinds_table`)."""

from __future__ import annotations

import sys

from shared.kind_catalog import markdown_table
from shared.kinds import platform_registry

if __name__ == "__main__":
    sys.stdout.write(markdown_table(platform_registry()))
