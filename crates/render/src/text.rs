//! Text on the invoice: the typefaces ([`PdfFont`]: a primary face and fallbacks), measuring
//! with the advances the glyphs are drawn with, line breaking by the rules of Chinese
//! typesetting, and fitting text to a box by wrapping and then shrinking to a floor. Shared
//! by every layout format.

use krilla::text::{Font, KrillaGlyph};
use skrifa::instance::{LocationRef, Size};
use skrifa::{GlyphId, MetadataProvider};

use crate::RenderError;

/// Line height as a multiple of the type size.
pub(crate) const LEADING: f32 = 1.2;

/// Text fitted to a box ([`Measure::fit`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fitted {
    /// The lines, top to bottom.
    pub(crate) lines: Vec<String>,
    /// The size they are set in, points.
    pub(crate) size: f32,
    /// Whether they fit the box (false only at the floor size).
    pub(crate) fits: bool,
}

/// Characters a line does not begin with: closing punctuation and brackets (GB/T 15834,
/// and common practice for the Latin ones).
fn no_line_start(c: char) -> bool {
    "，。、；：？！）》」』】〕〉〗｝”’…—·,.;:?!)]}%％°℃‰～々".contains(c)
}

/// Characters a line does not end with: opening brackets and quotation marks, currency
/// signs.
fn no_line_end(c: char) -> bool {
    "（《「『【〔〈〖｛“‘([{￥¥$".contains(c)
}

/// Han characters, kana, CJK punctuation and full-width forms: each one a place to break.
fn breaks_around(c: char) -> bool {
    matches!(u32::from(c),
        0x2E80..=0x2FFF | 0x3000..=0x30FF | 0x3100..=0x9FFF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// `text` as the units line breaking works with: a run of Latin letters, digits and
/// punctuation (a word or number, never split unless it alone exceeds a line), one space, a
/// `\n`, or any other single character.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (at, c) in text.char_indices() {
        let in_word = !c.is_whitespace() && !breaks_around(c);
        match (in_word, word) {
            (true, None) => word = Some(at),
            (true, Some(_)) => {}
            (false, Some(start)) => {
                out.push(&text[start..at]);
                word = None;
            }
            (false, None) => {}
        }
        if !in_word {
            out.push(match c {
                '\n' => "\n",
                c if c.is_whitespace() => " ",
                _ => &text[at..at + c.len_utf8()],
            });
        }
    }
    if let Some(start) = word {
        out.push(&text[start..]);
    }
    out
}

/// A word's characters, one by one.
fn split_chars(word: &str) -> impl Iterator<Item = &str> {
    word.char_indices()
        .map(move |(at, c)| &word[at..at + c.len_utf8()])
}

/// The typefaces an invoice is drawn with, ready for measuring and drawing: a primary face and
/// fallbacks for what it lacks (rare characters of CJK Extensions A and B), each character
/// drawn by the first face that has it; and optionally a face for labels (the real invoice's
/// 楷体) and a monospaced one for the number and the taxpayer ids, each falling back to the
/// value faces for what it lacks. Load once, render many.
#[derive(Clone)]
pub struct PdfFont {
    /// Every face: the value faces first (`..values`), then the label and mono faces.
    pub(crate) faces: Vec<Face>,
    values: usize,
    label: Option<usize>,
    mono: Option<usize>,
}

/// Which typeface a text is set in ([`PdfFont`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Values: the primary face and its fallbacks.
    Value,
    /// The title and labels.
    Label,
    /// The number and the taxpayer ids.
    Mono,
}

#[derive(Clone)]
pub(crate) struct Face {
    pub(crate) font: Font,
    pub(crate) data: std::sync::Arc<Vec<u8>>,
    pub(crate) index: u32,
}

impl Face {
    fn new(data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        let data = std::sync::Arc::new(data);
        skrifa::FontRef::from_index(&data, index).map_err(|_| RenderError::Font)?;
        let font = Font::new(krilla::Data::from(data.clone()), index).ok_or(RenderError::Font)?;
        Ok(Self { font, data, index })
    }

    fn face(&self) -> skrifa::FontRef<'_> {
        skrifa::FontRef::from_index(&self.data, self.index).expect("checked when loaded")
    }
}

impl PdfFont {
    /// Loads a font (`.ttf`/`.otf`, or a `.ttc` with its face index).
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn new(data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        Ok(Self {
            faces: vec![Face::new(data, index)?],
            values: 1,
            label: None,
            mono: None,
        })
    }

    /// This font with `data` as a fallback face for characters the value faces before it
    /// lack.
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn with_fallback(mut self, data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        self.faces.insert(self.values, Face::new(data, index)?);
        self.values += 1;
        for k in [&mut self.label, &mut self.mono].into_iter().flatten() {
            *k += 1;
        }
        Ok(self)
    }

    /// This font with `data` as the face of the title and labels.
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn with_label_face(mut self, data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        self.faces.push(Face::new(data, index)?);
        self.label = Some(self.faces.len() - 1);
        Ok(self)
    }

    /// This font with `data` as the monospaced face of the number and the taxpayer ids.
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn with_mono_face(mut self, data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        self.faces.push(Face::new(data, index)?);
        self.mono = Some(self.faces.len() - 1);
        Ok(self)
    }

    /// Whether the label face draws every character of `text` itself (no fallback).
    #[must_use]
    pub fn labels_cover(&self, text: &str) -> bool {
        self.label.is_some_and(|k| {
            let map = self.faces[k].face().charmap();
            text.chars()
                .all(|c| c.is_whitespace() || map.map(c).is_some())
        })
    }

    /// The first character of `text` no value face can draw, if any.
    #[must_use]
    pub fn missing(&self, text: &str) -> Option<char> {
        let maps: Vec<_> = self.faces[..self.values]
            .iter()
            .map(|f| f.face().charmap())
            .collect();
        text.chars()
            .find(|&c| !c.is_whitespace() && maps.iter().all(|m| m.map(c).is_none()))
    }
}

/// Measures text widths in points.
pub(crate) struct Measure<'a> {
    faces: Vec<(
        skrifa::charmap::Charmap<'a>,
        skrifa::metrics::GlyphMetrics<'a>,
    )>,
    values: usize,
    label: Option<usize>,
    mono: Option<usize>,
}

/// A run of text drawn by one face: the face, the text, its glyphs (their ranges within the
/// run's text), and its width at size 1.
pub(crate) struct Run<'t> {
    pub(crate) face: usize,
    pub(crate) text: &'t str,
    pub(crate) glyphs: Vec<KrillaGlyph>,
    pub(crate) width: f32,
}

impl<'a> Measure<'a> {
    pub(crate) fn new(font: &'a PdfFont) -> Self {
        Self {
            faces: font
                .faces
                .iter()
                .map(|f| {
                    let face = f.face();
                    (
                        face.charmap(),
                        face.glyph_metrics(Size::new(1.0), LocationRef::default()),
                    )
                })
                .collect(),
            values: font.values,
            label: font.label,
            mono: font.mono,
        }
    }

    /// The face, glyph and advance at size 1 that draw `c` in `style`: the style's own face
    /// if it has it, else the first value face that has it (an unmapped character takes the
    /// primary face's `.notdef`, half an em; `check_draft_glyphs` has refused those already,
    /// whitespace aside).
    fn glyph(&self, c: char, style: Style) -> (usize, GlyphId, f32) {
        let own = match style {
            Style::Value => None,
            Style::Label => self.label,
            Style::Mono => self.mono,
        };
        for k in own.into_iter().chain(0..self.values) {
            let (charmap, metrics) = &self.faces[k];
            if let Some(g) = charmap.map(c) {
                return (k, g, metrics.advance_width(g).unwrap_or(0.5));
            }
        }
        (0, GlyphId::NOTDEF, 0.5)
    }

    /// Width at `size` points.
    pub(crate) fn width(&self, text: &str, size: f32, style: Style) -> f32 {
        text.chars().map(|c| self.glyph(c, style).2).sum::<f32>() * size
    }

    /// The runs that draw `text`, one glyph per character, each mapped back to its character
    /// so text extraction recovers it. Invoice text needs no shaping (no ligatures, no marks;
    /// the bundled faces carry no layout tables at all), and the widths used for alignment
    /// are the same advances the glyphs are drawn with.
    pub(crate) fn runs<'t>(&self, text: &'t str, style: Style) -> Vec<Run<'t>> {
        let mut runs: Vec<Run<'t>> = Vec::new();
        let mut start = 0;
        for (at, c) in text.char_indices() {
            let (face, g, advance) = self.glyph(c, style);
            let continues = runs.last().is_some_and(|r| r.face == face);
            if !continues {
                start = at;
                runs.push(Run {
                    face,
                    text: "",
                    glyphs: Vec::new(),
                    width: 0.0,
                });
            }
            let run = runs.last_mut().expect("pushed above");
            let end = at + c.len_utf8();
            run.text = &text[start..end];
            run.glyphs.push(KrillaGlyph::new(
                krilla::text::GlyphId::new(g.to_u32()),
                advance,
                0.0,
                0.0,
                0.0,
                at - start..end - start,
                None,
            ));
            run.width += advance;
        }
        runs
    }

    /// Splits `text` at `size` points into lines no wider than `width` points, by the rules
    /// of Chinese typesetting: a line may break between any two Han characters, at a space,
    /// and where Han and Latin text meet, never inside a Latin word or number (unless it
    /// alone is wider than a line: then it is split where it must); a line does not begin
    /// with closing punctuation or a closing bracket, nor end with an opening one (the
    /// character before is carried to the next line instead). `\n` always breaks.
    pub(crate) fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line: Vec<&str> = Vec::new();
        let mut used = 0.0;
        let flush = |line: &mut Vec<&str>, lines: &mut Vec<String>| {
            let joined: String = line.concat();
            lines.push(joined.trim_end().to_owned());
            line.clear();
        };
        for token in tokens(text) {
            if token == "\n" {
                flush(&mut line, &mut lines);
                used = 0.0;
                continue;
            }
            if token == " " && line.is_empty() {
                continue;
            }
            let w = self.width(token, size, Style::Value);
            if used + w <= width {
                line.push(token);
                used += w;
                continue;
            }
            if token == " " {
                // A space at the end of a line is dropped with the break it makes.
                flush(&mut line, &mut lines);
                used = 0.0;
                continue;
            }
            if w > width {
                // A word wider than a line: split where it must, filling this line first.
                for c in split_chars(token) {
                    let cw = self.width(c, size, Style::Value);
                    if used + cw > width && !line.is_empty() {
                        flush(&mut line, &mut lines);
                        used = 0.0;
                    }
                    line.push(c);
                    used += cw;
                }
                continue;
            }
            // Break before `token`; carry what may not end this line, or the character a
            // closing mark may not be separated from, to the next.
            let mut carried: Vec<&str> = Vec::new();
            let starts_closed = token.chars().next().is_some_and(no_line_start);
            while line.len() > 1 {
                let last = line[line.len() - 1];
                let opening = last.chars().last().is_some_and(no_line_end);
                if opening || (starts_closed && carried.is_empty()) {
                    carried.push(line.pop().expect("more than one token"));
                } else {
                    break;
                }
            }
            flush(&mut line, &mut lines);
            carried.reverse();
            used = carried
                .iter()
                .map(|t| self.width(t, size, Style::Value))
                .sum();
            line.extend(carried);
            line.push(token);
            used += w;
        }
        if !line.is_empty() || lines.is_empty() {
            flush(&mut line, &mut lines);
        }
        lines
    }

    /// `text` at the largest size from `nominal` down to `floor` (in half points) at which its
    /// lines ([`Measure::wrap`]) fit `width` × `height` points with [`LEADING`]; at `floor`
    /// when none does (then `fits` is false and the caller continues what is left
    /// elsewhere).
    pub(crate) fn fit(
        &self,
        text: &str,
        (width, height): (f32, f32),
        (nominal, floor): (f32, f32),
    ) -> Fitted {
        let mut size = nominal;
        loop {
            let lines = self.wrap(text, size, width);
            #[expect(clippy::cast_precision_loss, reason = "a few lines")]
            let fits = lines.len() as f32 * size * LEADING <= height + 0.01;
            if fits || size <= floor {
                return Fitted { lines, size, fits };
            }
            size = (size - 0.5).max(floor);
        }
    }
}
