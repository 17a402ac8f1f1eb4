#!/usr/bin/env python3
"""Derives the bundled 楷体 faces from Debian's LXGW WenKai (fonts-lxgw-wenkai 1.250+repack-1,
SIL Open Font License 1.1):

- kai-labels.ttf: LXGW WenKai Regular, only the characters of the invoice's title and
  labels (LABELS below; the render tests fail when a label draws a character the face lacks);
- kai-mono-ids.ttf: LXGW WenKai Mono Regular, only 0-9 and A-Z: the invoice number and
  the 18-character taxpayer ids, set in a monospaced face as on the real invoice.

    pip install 'fonttools==4.61.0'
    python3 derive_faces.py /usr/share/fonts/truetype/lxgw-wenkai .

Outlines and horizontal metrics are kept; OpenType layout, hinting, vertical metrics and glyph
names are dropped, as for the other bundled faces (derive.py).

A subset is a Modified Version under the OFL, and "LXGW" and "霞鹜" are Reserved Font Names:
the derived faces are renamed (Fapiao Kai Labels, Fapiao Kai Mono Ids); the copyright and
licence name records are kept.
"""

import string
import sys

from fontTools import subset
from fontTools.ttLib import TTFont

LABELS = (
    "电子发票（增值税专用发票）（普通发票）发票号码：开票日期：第页/共页"
    "购买方信息销售方信息名称：统一社会信用代码/纳税人识别号："
    "项目名称规格型号单位数量单价金额税率/征收率税额合计（续下页）"
    "价税合计（大写）（小写）备注开票人："
    "0123456789 "
)
IDS = string.digits + string.ascii_uppercase


def derive(source: str, target: str, text: str, family: str) -> None:
    font = TTFont(source, recalcTimestamp=False)
    options = subset.Options()
    options.layout_features = []
    options.hinting = False
    options.glyph_names = False
    options.name_IDs = ["*"]
    options.drop_tables += ["GSUB", "GPOS", "GDEF", "vhea", "vmtx", "VORG", "DSIG"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    name = font["name"]
    postscript = family.replace(" ", "") + "-Regular"
    for record in list(name.names):
        if record.nameID in (1, 16):
            record.string = family
        elif record.nameID in (2, 17):
            record.string = "Regular"
        elif record.nameID in (3, 4):
            record.string = f"{family} Regular"
        elif record.nameID == 6:
            record.string = postscript
        elif record.nameID not in (0, 13, 14):
            name.removeNames(nameID=record.nameID)
    font.save(target)


def main(source_dir: str, target_dir: str) -> None:
    derive(
        f"{source_dir}/LXGWWenKai-Regular.ttf",
        f"{target_dir}/kai-labels.ttf",
        LABELS,
        "Fapiao Kai Labels",
    )
    derive(
        f"{source_dir}/LXGWWenKaiMono-Regular.ttf",
        f"{target_dir}/kai-mono-ids.ttf",
        IDS,
        "Fapiao Kai Mono Ids",
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
