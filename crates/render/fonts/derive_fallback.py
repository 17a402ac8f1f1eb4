#!/usr/bin/env python3
"""Derives the bundled fallback face, noto-sans-cjk-sc-ext.otf, from Debian's Noto Sans CJK SC
(face 2 of NotoSansCJK-Regular.ttc): the characters it draws that WenQuanYi Micro Hei (the
primary face) lacks, among CJK radicals, Unified Ideographs, Extension A, the compatibility
ideographs and the supplementary planes (Extensions B and on) — rare characters of names
such as 䶮 (U+4DAE) and 𠮷 (U+20BB7).

    pip install 'fonttools==4.61.0'
    python3 derive_fallback.py /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc \\
        wqy-microhei.ttf noto-sans-cjk-sc-ext.otf

Outlines and horizontal metrics are kept; OpenType layout, hinting, vertical metrics and glyph
names are dropped, as for the primary face (derive.py).
"""

import sys

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

RANGES = [(0x2E80, 0x2FDF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)]


def main(source: str, primary: str, target: str) -> None:
    have = set(TTFont(primary).getBestCmap())
    font = TTCollection(source).fonts[2]
    assert font["name"].getDebugName(4) == "Noto Sans CJK SC", "face 2 is SC"
    wanted = sorted(
        c
        for c in font.getBestCmap()
        if c not in have and any(lo <= c <= hi for lo, hi in RANGES)
    )
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
    font.recalcTimestamp = False
    font.save(target)
    print(f"{len(wanted)} characters")


if __name__ == "__main__":
    main(*sys.argv[1:4])
