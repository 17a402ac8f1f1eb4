//! Fuzzes reading an invoice file: an error or an invoice that serializes back to itself.
#![no_main]

use fapiao_model::Invoice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(invoice) = Invoice::from_json(text) {
        let again = serde_json::to_string(&invoice).expect("an invoice serializes");
        assert_eq!(Invoice::from_json(&again).expect("what we wrote reads back"), invoice);
    }
});
