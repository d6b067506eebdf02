"""What every benchmark writes: one JSON record, atomically, with no machine-specific paths."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def portable(value):
    """Paths inside the repository as relative strings; other values unchanged."""
    if isinstance(value, Path):
        try:
            return value.resolve().relative_to(REPO).as_posix()
        except ValueError:
            return value.name
    return value


def write_record(path: Path, benchmark: str, cpu: str, machine: dict | None = None, **fields) -> None:
    """Write ``fields`` plus the benchmark name, time and machine as JSON at ``path``."""
    record = {"benchmark": benchmark, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                          **(machine or {})},
              **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=portable))
    os.replace(tmp, path)
    print(f"wrote {portable(path)}")
