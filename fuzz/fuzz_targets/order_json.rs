//! Fuzzes order reading and validation with untrusted bytes: findings, never a panic; and a
//! valid order always yields totals that add up.
#![no_main]

use std::sync::OnceLock;

use fapiao_model::{Order, TaxCatalog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CATALOG: OnceLock<TaxCatalog> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(order) = Order::from_json(text)
        && let Ok(draft) = order.validate(CATALOG.get_or_init(TaxCatalog::builtin))
    {
        let t = draft.totals();
        assert_eq!(t.amount + t.tax, t.total);
        assert_eq!(fapiao_model::parse_chinese_upper(draft.total_in_words()), Some(t.total));
    }
});
