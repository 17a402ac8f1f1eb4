use std::path::PathBuf;

use fapiao_model::{Invoice, InvoiceDraft, InvoiceNumber, Order, TaxCatalog, ValidationErrors};
use time::macros::datetime;

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn data(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

/// Non-comment, non-blank lines of a data file.
pub(crate) fn data_lines(name: &str) -> Vec<String> {
    data(name)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn example(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/orders").join(name)).unwrap()
}

pub(crate) fn validate_json(json: &str) -> Result<InvoiceDraft, ValidationErrors> {
    Order::from_json(json)?.validate(&TaxCatalog::builtin())
}

pub(crate) fn draft(name: &str) -> InvoiceDraft {
    validate_json(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Issues a draft with a 2026 Shanghai number.
pub(crate) fn issue(draft: InvoiceDraft, sequence: u64) -> Invoice {
    let number = InvoiceNumber::parse(&format!("26312{sequence:015}")).unwrap();
    Invoice::issue(draft, number, datetime!(2026-11-20 10:15:30)).unwrap()
}
