//! The real `fapiao` binary: preview, pki and envelope commands; the shipped deployment
//! files.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod bench;
mod deploy;
mod pki;
mod preview;
mod system;
mod verify;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn fapiao(args: &[&str]) -> Output {
    fapiao_in(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        args,
    )
}

/// Runs the binary in `dir` with test passphrases in the environment.
pub(crate) fn fapiao_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args(args)
        .current_dir(dir)
        .env("FAPIAO_CA_PASSPHRASE", "ca passphrase")
        .env("FAPIAO_KEY_PASSPHRASE", "key passphrase")
        .output()
        .expect("the binary runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
