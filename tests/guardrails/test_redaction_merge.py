"""How ``run_stage`` combines the redactions of several guardrails: overlapping spans are
merged so no character of any span stays in clear, and a rewrite that cannot be merged
blocks the stage instead of being dropped."""

from __future__ import annotations

import pytest

from tierflow.guardrails import (
    Action,
    Finding,
    GuardContext,
    Guardrail,
    RedactionConflict,
    Verdict,
    guardrail,
    merge_redactions,
    run_stage,
)

TEXT = "aaaaabbbbbccccc"  # placeholders below use upper case: any lower case letter leaked


def spans(name: str, *edits: tuple[int, int, str]) -> Guardrail:
    """A guardrail that redacts ``edits`` (start, end, replacement) as findings with spans."""

    def fn(text: str, ctx: GuardContext) -> Verdict:
        findings = [
            Finding(name=name, reason=f"{name} span", span=(s, e), replacement=r)
            for s, e, r in edits
        ]
        out, pos = [], 0
        for s, e, r in sorted(edits):
            out += [text[pos:s], r]
            pos = e
        return Verdict.redact(name, "".join(out) + text[pos:], findings)

    return guardrail(name=name, stages=("output",))(fn)


def rewrite(name: str, old: str, new: str) -> Guardrail:
    """A guardrail that rewrites the text its own way: a redaction without spans."""

    def fn(text: str, ctx: GuardContext) -> Verdict:
        if old not in text:
            return Verdict.allow(name)
        return Verdict.redact(name, text.replace(old, new), [Finding(name=name, reason="rewrote")])

    return guardrail(name=name, stages=("output",))(fn)


async def stage(text: str, *guards: Guardrail) -> tuple[Action, str, list[tuple[int, int]]]:
    result = await run_stage(list(guards), text, GuardContext(stage="output"))
    return result.action, result.text, [f.span for f in result.edits if f.span is not None]


async def test_overlapping_spans_leave_no_character_of_either_in_clear() -> None:
    # (0, 7) and (5, 15): the old merge skipped the second span and left "bbbccccc" in clear
    first, second = spans("first", (0, 7, "<X>")), spans("second", (5, 15, "<Y>"))
    for guards in ((first, second), (second, first)):
        action, text, edits = await stage(TEXT, *guards)
        assert action is Action.REDACT
        assert text == "<Y>"  # one edit over the union; the longer span's placeholder
        assert edits == [(0, 15)]
    action, text, edits = await stage(
        f"pre {TEXT} post", spans("a", (4, 11, "<X>")), spans("b", (9, 19, "<Y>"))
    )
    assert (action, text, edits) == (Action.REDACT, "pre <Y> post", [(4, 19)])


async def test_a_chain_of_overlaps_is_one_edit() -> None:
    guards = (spans("a", (0, 4, "<A>")), spans("b", (3, 8, "<B>")), spans("c", (7, 12, "<C>")))
    action, text, edits = await stage(TEXT, *guards)
    assert (action, text, edits) == (Action.REDACT, "<B>ccc", [(0, 12)])


async def test_adjacent_spans_are_two_edits() -> None:
    action, text, edits = await stage(TEXT, spans("a", (0, 5, "<A>")), spans("b", (5, 10, "<B>")))
    assert (action, text, edits) == (Action.REDACT, "<A><B>ccccc", [(0, 5), (5, 10)])


async def test_a_nested_span_is_covered_by_the_outer_one() -> None:
    outer, inner = spans("outer", (2, 13, "<O>")), spans("inner", (5, 10, "<I>"))
    for guards in ((outer, inner), (inner, outer)):
        action, text, edits = await stage(TEXT, *guards)
        assert (action, text, edits) == (Action.REDACT, "aa<O>cc", [(2, 13)])


async def test_same_span_twice_takes_the_first_guardrails_placeholder() -> None:
    action, text, _ = await stage(TEXT, spans("a", (5, 10, "<A>")), spans("b", (5, 10, "<B>")))
    assert (action, text) == (Action.REDACT, "aaaaa<A>ccccc")


async def test_a_rewrite_without_spans_alone_is_used() -> None:
    action, text, edits = await stage(TEXT, rewrite("custom", "bbbbb", "<R>"))
    assert (action, text, edits) == (Action.REDACT, "aaaaa<R>ccccc", [])


async def test_a_rewrite_without_spans_and_a_spanned_redaction_block() -> None:
    # Neither can be applied on top of the other: the old merge used the spans alone and
    # left "bbbbb" (which the rewrite had removed) in clear.
    guards = (rewrite("custom", "bbbbb", "<R>"), spans("pii", (0, 5, "<P>")))
    for order in (guards, guards[::-1]):
        result = await run_stage(list(order), TEXT, GuardContext(stage="output"))
        assert result.action is Action.BLOCK
        assert result.reason == (
            f"guardrails '{order[0].name}', '{order[1].name}' rewrote the text in ways that "
            "cannot be combined safely"
        )
        assert result.verdicts[-1].guardrail == "redaction_merge"
        assert not result.sensitive


async def test_two_different_rewrites_without_spans_block() -> None:
    guards = (rewrite("one", "aaaaa", "<1>"), rewrite("two", "ccccc", "<2>"))
    action, _, _ = await stage(TEXT, *guards)
    assert action is Action.BLOCK


async def test_the_same_rewrite_from_two_guardrails_is_used() -> None:
    guards = (rewrite("one", "bbbbb", "<R>"), rewrite("two", "bbbbb", "<R>"))
    assert (await stage(TEXT, *guards))[:2] == (Action.REDACT, "aaaaa<R>ccccc")


async def test_a_rewrite_beyond_its_own_spans_is_not_cut_back_to_them() -> None:
    # spans say (0, 5) but the text also lost "ccccc": merging by spans would leak it
    def fn(text: str, ctx: GuardContext) -> Verdict:
        found = Finding(name="odd", reason="r", span=(0, 5), replacement="<O>")
        return Verdict.redact("odd", "<O>bbbbb<C>", [found])

    odd = guardrail(name="odd", stages=("output",))(fn)
    assert (await stage(TEXT, odd))[:2] == (Action.REDACT, "<O>bbbbb<C>")
    assert (await stage(TEXT, odd, spans("b", (5, 10, "<B>"))))[0] is Action.BLOCK


async def test_a_redaction_with_no_rewrite_at_all_blocks() -> None:
    empty = guardrail(name="empty", stages=("output",))(
        lambda text, ctx: Verdict(guardrail="empty", action=Action.REDACT)
    )
    assert (await stage(TEXT, empty))[0] is Action.BLOCK


async def test_a_span_outside_the_text_blocks() -> None:
    assert (await stage(TEXT, spans("far", (10, 99, "<F>"))))[0] is Action.BLOCK


def test_merge_redactions_merges_or_raises() -> None:
    a = Verdict.redact(
        "a", "<X>bbbccccc", [Finding(name="a", reason="r", span=(0, 7), replacement="<X>")]
    )
    b = Verdict.redact(
        "b", "aaaaa<Y>", [Finding(name="b", reason="r", span=(5, 15), replacement="<Y>")]
    )
    assert merge_redactions(TEXT, [a, b]) == "<Y>"
    spanless = Verdict.redact("c", "aaaaa<R>ccccc", [])
    with pytest.raises(RedactionConflict):
        merge_redactions(TEXT, [a, spanless])
