"""Regenerate ``guardrails/builtin/confusables.json``: non-ASCII characters that look like an
ASCII letter or digit, from the Unicode confusables data shipped by the
``confusable-homoglyphs`` package (``pip install confusable-homoglyphs==3.3.1``)::

    .venv/bin/python bench/data/guardrails/confusables.py

Why a generated table rather than the package at run time: the package reads a 0.9 MB
JSON file (~0.1-0.6 s) on first use, and ``normalize`` only needs the few hundred
characters that fold to ASCII; the table is 10 KB and loads in well under a millisecond.
"""

from __future__ import annotations

import importlib
import json
import unicodedata
from pathlib import Path
from typing import Any

# No type information in the package.
confusable_homoglyphs: Any = importlib.import_module("confusable_homoglyphs")

OUT = Path(__file__).resolve().parents[3] / "guardrails" / "builtin" / "confusables.json"


def main() -> None:
    data = json.loads(
        (Path(confusable_homoglyphs.__file__).parent / "confusables.json").read_text()
    )
    table: dict[str, str] = {}
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        targets = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()]
        targets = [t for t in targets if t.isalnum()]
        if not targets:
            continue
        # NFKC already folds full-width and mathematical letters; keep what it leaves.
        if unicodedata.normalize("NFKC", char).isascii():
            continue
        table[char] = targets[0].lower()
    OUT.write_text(json.dumps(dict(sorted(table.items())), ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(table)} characters")


if __name__ == "__main__":
    main()
