"""The start-up benchmark on one round: the recorded JSON has its shape, and
``import tierflow`` stays light (a module count, not a time)."""

from __future__ import annotations

import json
from pathlib import Path

from tierflow.bench.record import record_results
from tierflow.bench.startup import measure


def test_startup_benchmark_records_its_figures(tmp_path: Path) -> None:
    record_results("startup", measure(runs=1, warmup=0), tmp_path, command="tierflow bench startup")

    record = json.loads((tmp_path / "startup.json").read_text())
    assert record["benchmark"] == "startup"
    assert record["command"] == "tierflow bench startup"
    results = record["results"]
    assert results["runs"] == 1
    assert "before" not in results
    probes = results["probes"]
    assert set(probes) == {"baseline", "import", "help", "runtime"}
    for probe in probes.values():
        assert probe["command"]
        assert probe["wall_ms"]["median"] > 0
        assert probe["wall_ms"]["p90"] >= probe["wall_ms"]["median"]
        assert probe["modules_total"] >= probe["modules_loaded"] >= 0
    assert probes["baseline"]["modules_loaded"] == 0
    # the lazy public surface: `import tierflow` loads almost nothing ...
    assert probes["import"]["modules_total"] < 300
    assert probes["import"]["modules_total"] >= probes["baseline"]["modules_total"]
    # ... and `tierflow.Runner` loads the runtime
    assert probes["runtime"]["modules_loaded"] > probes["import"]["modules_loaded"]
