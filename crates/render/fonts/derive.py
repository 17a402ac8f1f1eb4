#!/usr/bin/env python3
"""Derives the bundled wqy-microhei.ttf from Debian's wqy-microhei.ttc (face 0).

    pip install 'fonttools==4.61.0'
    python3 derive.py /usr/share/fonts/truetype/wqy/wqy-microhei.ttc wqy-microhei.ttf

Outlines, horizontal metrics, cmap and name are kept as they are. Removed, because a PDF
invoice never uses them and every rendered PDF would otherwise carry and compress them in its
font subset: TrueType hinting (fpgm, prep, cvt, gasp and the per-glyph instructions), OpenType
layout (GSUB, GPOS, GDEF: the renderer places one glyph per character, without shaping),
vertical metrics (vhea, vmtx), FontForge's FFTM, and the glyph names (post becomes format 3).
The output is byte-for-byte reproducible (head.modified is left as it was).
"""

import sys

from fontTools.ttLib import TTCollection


def main(source: str, target: str) -> None:
    font = TTCollection(source).fonts[0]
    for tag in ["fpgm", "prep", "cvt ", "gasp", "GSUB", "GPOS", "GDEF", "FFTM", "vhea", "vmtx"]:
        if tag in font:
            del font[tag]
    font["post"].formatType = 3.0
    glyf = font["glyf"]
    for name in font.getGlyphOrder():
        glyf[name].removeHinting()
    font["maxp"].maxSizeOfInstructions = 0
    font.recalcTimestamp = False
    font.save(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
