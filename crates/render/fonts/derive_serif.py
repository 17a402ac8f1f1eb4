#!/usr/bin/env python3
"""Derives the bundled value face, noto-serif-cjk-sc-gbk.ttf, from Debian's Noto Serif CJK SC
(face 2 of NotoSerifCJK-Regular.ttc): the 宋体 (Song/Ming) the real invoice sets its values in,
for every character of GBK — printable ASCII, the GBK symbols and its 21,003 Han characters
(GB 2312 and the names' 堃, 喆, 玥 beyond it), with Latin-1, Latin Extended-A, punctuation,
currency signs and ⊗ (EXTRA). Rarer characters (Extension A, B and on) fall back
to the sans-serif faces, as most issuing software does for 生僻字.

    pip install 'fonttools==4.61.0'
    python3 derive_serif.py /usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc \\
        noto-serif-cjk-sc-gbk.ttf

Horizontal metrics are kept; OpenType layout, hinting, vertical metrics and glyph names are
dropped, as for the other faces (derive.py says why). The cubic CFF outlines become quadratic
TrueType ones (fontTools' cu2qu, within 1 unit of the 1,000-unit em): a PDF embeds a subset of
the face on every render, and subsetting `glyf` copies the glyphs while subsetting CFF
decompiles them — 1.55 instead of 2.11 ms a PDF (`cargo bench -p fapiao-render`), for 9.4 MB
instead of 6.9. Takes about a minute and a half.
"""

import sys

from fontTools import subset
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTCollection, TTFont, newTable


def gbk() -> set[int]:
    """Printable ASCII and every character GBK encodes in two bytes."""
    chars = set(range(0x20, 0x7F))
    for lead in range(0x81, 0xFF):
        for trail in [*range(0x40, 0x7F), *range(0x80, 0xFF)]:
            try:
                chars.add(ord(bytes([lead, trail]).decode("gbk")))
            except UnicodeDecodeError:
                pass
    return chars


def to_truetype(font: TTFont) -> None:
    """Replaces the CFF outlines by quadratic TrueType ones (fontTools' otf2ttf snippet)."""
    order = font.getGlyphOrder()
    glyphs = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyphs)
        glyphs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        glyf.glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    font["glyf"] = glyf
    del font["CFF "]
    glyf.compile(font)
    hmtx = font["hmtx"]
    for name, glyph in glyf.glyphs.items():
        hmtx.metrics[name] = (hmtx.metrics[name][0], getattr(glyph, "xMin", 0))
    maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    maxp.numGlyphs = len(order)
    maxp.maxZones = 1
    for field in [
        "maxPoints", "maxContours", "maxCompositePoints", "maxCompositeContours",
        "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
        "maxStackElements", "maxSizeOfInstructions", "maxComponentElements", "maxComponentDepth",
    ]:
        setattr(maxp, field, 0)
    font["maxp"] = maxp
    font["head"].glyphDataFormat = 0
    font["post"].formatType = 3.0
    font.sfntVersion = "\x00\x01\x00\x00"


# Beyond GBK, what amounts and foreign names print: Latin-1 (¥ of amounts, é), Latin
# Extended-A, general punctuation, currency signs, and ⊗ before the upper-case total.
EXTRA = {*range(0xA0, 0x180), *range(0x2000, 0x2070), *range(0x20A0, 0x20C0), 0x2297}


def main(source: str, target: str) -> None:
    font = TTCollection(source).fonts[2]
    assert font["name"].getDebugName(4) == "Noto Serif CJK SC", "face 2 is SC"
    wanted = sorted((gbk() | EXTRA) & set(font.getBestCmap()))
    options = subset.Options()
    options.layout_features = []
    options.hinting = False
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.glyph_names = False
    options.drop_tables += ["GSUB", "GPOS", "GDEF", "BASE", "VORG", "vhea", "vmtx", "DSIG"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted)
    subsetter.subset(font)
    to_truetype(font)
    font.recalcTimestamp = False
    font.save(target)
    print(f"{len(wanted)} characters")


if __name__ == "__main__":
    main(*sys.argv[1:3])
