//! The one place the CLI reads the wall clock; everything below takes `now` as an argument.

use time::OffsetDateTime;

/// The current time.
#[expect(
    clippy::disallowed_methods,
    reason = "the binary's single source of wall-clock time"
)]
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
