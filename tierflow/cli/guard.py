"""What ``tierflow guard`` does, kept out of the CLI module so it stays a thin shell."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from rich.markup import escape

from tierflow.errors import UserError
from tierflow.guardrails.base import GuardContext, PlaceholderVault, Stage, StageResult, run_stage
from tierflow.guardrails.builtin import guardrails_for_stage


def read_jsonl(path: Path) -> list[str]:
    """The ``text`` of every line of ``path``; the first bad line is a one-line UserError.

    The whole file is read and checked before anything runs, so a corpus with a bad line
    at the end does not leave half its verdicts printed.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UserError(f'{path}:{number}: expected an object with a "text" string')
        texts.append(row["text"])
    return texts


async def check_texts(stage: str, texts: Sequence[str], config: Path | None) -> list[StageResult]:
    """Each text through ``stage``'s configured guardrails, one vault for the whole batch."""
    from tierflow.settings import load_settings
    from tierflow.telemetry import recording

    settings = load_settings(config)
    cfg = settings.guardrails
    typed = cast(Stage, stage)
    names = getattr(cfg.stages, typed) if cfg.enabled else []
    guards = guardrails_for_stage(names, cfg)
    vault = PlaceholderVault()
    with recording(settings.telemetry.enabled):
        return [
            await run_stage(guards, text, GuardContext(stage=typed, vault=vault)) for text in texts
        ]


def render(result: StageResult) -> str:
    """The human-readable form: the action, the reason, each finding, then the text."""
    colour = {"allow": "green", "redact": "yellow", "block": "red"}[result.action.value]
    lines = [
        f"[bold {colour}]{result.action.value}[/]" + (" (sensitive)" if result.sensitive else "")
    ]
    if result.reason:
        lines.append(f"reason: {escape(result.reason)}")
    for f in result.as_dict()["findings"]:
        where = f" at {f['span'][0]}-{f['span'][1]}" if "span" in f else ""
        layer = f" [{f['layer']}]" if "layer" in f else ""
        lines.append(f"  - {escape(f['name'])}{escape(layer)}{where}: {escape(str(f['reason']))}")
    if result.action.value == "redact":
        lines.append(escape(result.text))
    return "\n".join(lines)
