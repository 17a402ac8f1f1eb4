//! How issue times are written: `yyyy-MM-dd HH:mm:ss`, China Standard Time (UTC+8), as the
//! 数电票 XML writes `RequestTime`.

use time::PrimitiveDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// `yyyy-MM-dd HH:mm:ss`.
pub const ISSUE_TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Formats an issue time.
#[must_use]
pub fn format(t: PrimitiveDateTime) -> String {
    t.format(ISSUE_TIME_FORMAT)
        .expect("a PrimitiveDateTime always formats with a fixed pattern")
}

/// Parses an issue time.
///
/// # Errors
/// [`time::error::Parse`] when the text is not `yyyy-MM-dd HH:mm:ss`.
pub fn parse(text: &str) -> Result<PrimitiveDateTime, time::error::Parse> {
    PrimitiveDateTime::parse(text, ISSUE_TIME_FORMAT)
}

pub(crate) fn serialize<S: serde::Serializer>(
    t: &PrimitiveDateTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}
