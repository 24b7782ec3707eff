"""Reading documents and cutting them into passages for the retrieval index.

Markdown is cut at headings first (a section is a unit of meaning in a policy page), then
at paragraphs, packed up to a size cap; a paragraph longer than the cap is cut at line or
sentence ends. Consecutive pieces of one section share a small overlap so a fact that
straddles a cut is still whole in one of them. Plain text has no headings: paragraphs only.
PDF is read page by page with pypdf (the only module importing it), so every passage knows
its page.

Every passage is an exact slice ``text[start:end]`` of the extracted text, so a citation
can point back at the source. Why by hand: the splitters of the RAG frameworks
(langchain-text-splitters, llama-index) pull in a framework for ~100 lines and do not
return offsets for heading-aware splits.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

MAX_CHARS = 900  # ~200 MiniLM tokens: under the embedder's 256-token window
OVERLAP_CHARS = 120
SUFFIXES = frozenset({".md", ".markdown", ".txt", ".pdf"})

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# Boundaries to cut at or to start an overlap from, best first: the end of a sentence, the
# start of a list item or table row, any line (hard-wrapped prose breaks mid-sentence).
_BOUNDARIES = (
    re.compile(r"(?<=[.!?:;])\s+"),
    re.compile(r"\n(?=[ \t]*(?:[-*+|]|\d+[.)])[ \t])"),
    re.compile(r"\n"),
)


class UnreadableDocument(Exception):
    """A file that cannot be turned into text (corrupt PDF, encrypted, ...)."""


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """One passage: an exact slice of a document's text, with where it came from."""

    position: int  # index of the chunk within its file: the citation anchor
    text: str
    section: str  # "Document title > Heading > Subheading"
    start: int  # offsets into the file's text (into the page's text for PDF)
    end: int
    page: int | None = None  # 1-based, PDF only


def chunk_document(name: str, data: bytes, *, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Cut a document's bytes into chunks; ``name``'s suffix picks the format.

    Takes bytes, not a path, so the chunks are of exactly the bytes that were hashed.
    Raises :class:`UnreadableDocument`.
    """
    suffix = PurePath(name).suffix.lower()
    if suffix == ".pdf":
        return _pdf_chunks(name, data, max_chars)
    text = data.decode("utf-8", errors="replace")
    pieces: list[tuple[str, int, int]] = []
    title = _title(text, name)
    if suffix in (".md", ".markdown"):
        for section, start, end in _markdown_sections(text, title):
            pieces.extend((section, s, e) for s, e in _pack(text, start, end, max_chars))
    else:
        pieces.extend((title, s, e) for s, e in _pack(text, 0, len(text), max_chars))
    return [
        Chunk(position=i, text=text[s:e], section=sec, start=s, end=e)
        for i, (sec, s, e) in enumerate(pieces)
    ]


def _pdf_chunks(name: str, data: bytes, max_chars: int) -> list[Chunk]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableDocument("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except UnreadableDocument:
        raise
    except Exception as exc:  # a parser on arbitrary files: any failure skips this file only
        raise UnreadableDocument(f"cannot read PDF: {exc}") from exc
    title = (meta_title or "").strip() or _title(pages[0] if pages else "", name)
    chunks: list[Chunk] = []
    for number, page_text in enumerate(pages, start=1):
        for s, e in _pack(page_text, 0, len(page_text), max_chars):
            chunks.append(
                Chunk(
                    position=len(chunks),
                    text=page_text[s:e],
                    section=f"{title} > page {number}",
                    start=s,
                    end=e,
                    page=number,
                )
            )
    return chunks


def _title(text: str, name: str) -> str:
    match = _HEADING.search(text)
    if match and match.group(1) == "#":
        return match.group(2).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= 100 else PurePath(name).stem
    return PurePath(name).stem


def _markdown_sections(text: str, title: str) -> Iterator[tuple[str, int, int]]:
    """(heading path, start, end) for each heading's span; the heading line is included."""
    headings = list(_HEADING.finditer(text))
    stack: list[tuple[int, str]] = []
    bounds = [(0, None)] + [(m.start(), m) for m in headings]
    for i, (start, match) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        if match is not None:
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2).strip()))
            body = text[match.end() : end]
        else:
            body = text[start:end]
        if not body.strip():
            continue  # a heading directly followed by a sub-heading, or an empty preamble
        names = [name for _, name in stack]
        if not names or names[0] != title:
            names.insert(0, title)
        yield " > ".join(names), start, end


def _pack(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Greedy packing of paragraphs into spans of at most ``max_chars``, with overlap."""
    spans = [
        span for p in _paragraphs(text, start, end) for span in _split_long(text, *p, max_chars)
    ]
    i = 0
    while i < len(spans):
        chunk_start, chunk_end = spans[i]
        j = i + 1
        while j < len(spans) and spans[j][1] - chunk_start <= max_chars:
            chunk_end = spans[j][1]
            j += 1
        yield chunk_start, chunk_end
        if j < len(spans):
            # The next chunk starts a little before its first paragraph, at a line or
            # sentence start, so a fact cut by the boundary is whole in one chunk.
            spans[j] = (_overlap_start(text, chunk_start, spans[j][0]), spans[j][1])
        i = j


def _paragraphs(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    pos = start
    for brk in _PARAGRAPH_BREAK.finditer(text, start, end):
        if text[pos : brk.start()].strip():
            yield _strip(text, pos, brk.start())
        pos = brk.end()
    if text[pos:end].strip():
        yield _strip(text, pos, end)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _split_long(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Cut a span longer than ``max_chars`` at the best boundary in its last two thirds."""
    while end - start > max_chars:
        limit, floor = start + max_chars, start + max_chars // 3
        cut = -1
        for boundary in _BOUNDARIES:
            cut = max((m.end() for m in boundary.finditer(text, floor, limit)), default=-1)
            if cut > floor:
                break
        if cut <= floor:  # no boundary: cut between words, or hard at the cap
            cut = text.rfind(" ", start, limit)
            cut = cut + 1 if cut > start else limit
        yield _strip(text, start, cut)
        start = _strip(text, cut, end)[0]
    if end > start:
        yield start, end


def _overlap_start(text: str, floor: int, start: int) -> int:
    """Where the next chunk begins: up to OVERLAP_CHARS before ``start``, at a boundary."""
    window_start = max(floor + 1, start - OVERLAP_CHARS)
    for boundary in _BOUNDARIES[:2]:  # a mid-sentence line start makes a poor beginning
        for match in boundary.finditer(text, window_start, start):
            begin = _strip(text, match.end(), start)[0]
            if begin < start:
                return begin
    return start
