//! The one place that reaches for the operating system's randomness. Everything else takes a
//! `CryptoRng` argument, so tests can pass a seeded one.

use getrandom::SysRng;
use rand_core::UnwrapErr;

/// The operating system's cryptographic random number generator.
#[must_use]
pub fn system_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}
