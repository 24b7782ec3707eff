"""One benchmark's result file: its figures with the command, date and machine that made them."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.machine(),
    }


def record_results(name: str, figures: dict[str, Any], results_dir: Path, *, command: str) -> None:
    """Write ``results_dir/NAME.json`` with the figures, the command that made them, the date
    and the machine, and print the figures."""
    record = {
        "benchmark": name,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "results": figures,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["results"], indent=2))
    print(f"recorded in {path}", file=sys.stderr)
