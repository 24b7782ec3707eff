"""Builds ``demo/docs/product-care-guide.pdf``, the demo corpus's one PDF, deterministically.

Run ``python -m tierflow.tools.retrieval.demo_pdf`` after editing :data:`PAGES`; a test
checks that the committed file is what this module writes. The PDF is written with pypdf
(already a dependency, for reading) and a hand-written content stream of a few text
operators: a PDF library for writing (fpdf2, reportlab) would be a new dependency for three
pages of plain text. Helvetica with WinAnsi encoding is one of the 14 standard fonts, so no
font is embedded and the file stays under 4 KB.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import (
    ContentStream,
    DictionaryObject,
    NameObject,
    TextStringObject,
)

TITLE = "Fernhill Product Care Guide"
PAGES: tuple[tuple[str, str], ...] = (
    (
        "Cast-iron cookware",
        "Season a new cast-iron pan before first use: wash it once with warm water, dry it "
        "on the hob, rub in a thin layer of sunflower or flaxseed oil and bake it upside "
        "down in the oven at 220 degrees Celsius for one hour. Let it cool in the oven. "
        "After cooking, clean the pan with hot water and a brush; a drop of mild washing-up "
        "liquid is fine. Never put cast iron in the dishwasher and never leave it to soak. "
        "Dry it on low heat and wipe in a few drops of oil while it is still warm. If the "
        "surface turns dull, grey or rusty, scrub the rust away with steel wool and season "
        "the pan again. Enamelled casseroles need no seasoning, but avoid metal utensils "
        "and heat them up slowly to protect the enamel.",
    ),
    (
        "Wooden boards and utensils",
        "Oil wooden chopping boards, spoons and serving boards every four weeks, and "
        "whenever the wood looks pale or dry. Use food-grade mineral oil or Fernhill board "
        "butter: apply a generous layer, leave it overnight and wipe off the excess in the "
        "morning. Never use olive or vegetable oil, which turns rancid. Wash wood by hand "
        "with warm soapy water right after use, stand it upright to dry and never soak it "
        "or put it in the dishwasher. To remove smells or stains, scrub the board with "
        "coarse salt and half a lemon, then rinse. If the surface feels rough after many "
        "washes, sand it lightly with 240-grit sandpaper and oil it again.",
    ),
    (
        "Linen, towels and rugs",
        "Wash linen tea towels, tablecloths and bed linen at 40 degrees Celsius at most, "
        "with a mild liquid detergent and without bleach or fabric softener. Linen shrinks "
        "by about 3 percent in the first wash. Tumble dry on a low setting, or hang to dry "
        "and iron while slightly damp. Wash new towels separately the first three times. "
        "Wool and jute rugs should be vacuumed once a week without the rotating brush; "
        "blot spills immediately with a dry cloth, never rub them. Have rugs professionally "
        "cleaned once a year. Turn a rug around every six months so it wears evenly.",
    ),
)

PDF_PATH = Path(__file__).parents[1] / "demo" / "docs" / "product-care-guide.pdf"
_LEFT, _TOP, _LEADING, _WIDTH_CHARS = 56, 780, 15, 88


def _escape(line: str) -> bytes:
    raw = line.encode("cp1252")  # WinAnsiEncoding, the font's encoding below
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _page_stream(heading: str, body: str, number: int) -> bytes:
    ops = [b"BT", b"/F1 16 Tf", f"{_LEADING + 7} TL".encode(), f"{_LEFT} {_TOP} Td".encode()]
    ops.append(b"(" + _escape(f"{TITLE} - {heading}") + b") Tj T*")
    ops += [b"/F1 11 Tf", f"{_LEADING} TL".encode()]
    for line in textwrap.wrap(body, _WIDTH_CHARS):
        ops.append(b"(" + _escape(line) + b") Tj T*")
    ops += [b"T* (" + _escape(f"Page {number} of {len(PAGES)}") + b") Tj", b"ET"]
    return b"\n".join(ops)


def build_pdf() -> bytes:
    """The PDF's bytes; the same on every run and every machine."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    for number, (heading, body) in enumerate(PAGES, start=1):
        page = writer.add_blank_page(595, 842)  # A4 in points
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = ContentStream(None, writer)
        stream.set_data(_page_stream(heading, body, number))
        page.replace_contents(stream)
    writer.add_metadata({"/Title": TextStringObject(TITLE)})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


if __name__ == "__main__":
    PDF_PATH.write_bytes(build_pdf())
    print(f"wrote {PDF_PATH}")
