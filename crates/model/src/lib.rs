//! The Fapiao invoice domain: parties, money, tax arithmetic, validation and the blue/red
//! rules of Chinese electronic VAT invoices (数电票).
//!
//! No I/O, no clock, no floats: times and catalogs are passed in, money is `rust_decimal`.
//! Every constrained value is a newtype built only through `parse`/`TryFrom` (and serde goes
//! through the same parser). Nothing here depends on another Fapiao crate.
//!
//! Entry points:
//! - [`Order`] (what an ERP submits) → [`Order::validate`] → [`InvoiceDraft`] (all amounts
//!   computed, every finding reported at once as [`ValidationErrors`]);
//! - [`Invoice::issue`] gives a draft its [`InvoiceNumber`] and time;
//! - [`red::plan_red`] / [`red::check_red`] apply the red-invoice rules against a blue invoice;
//! - [`to_chinese_upper`] writes 价税合计（大写）.
#![deny(clippy::float_arithmetic)]

pub mod datetime;
mod finding;
mod invoice;
mod invoice_number;
pub mod json;
pub mod mask;
mod money;
mod order;
mod record;
pub mod red;
mod tax_code;
mod tax_rate;
mod taxpayer_id;
mod upper;

pub use finding::{Finding, FindingCode, ValidationErrors};
pub use invoice::{
    Buyer, BuyerKind, Invoice, InvoiceDraft, InvoiceKind, InvoiceType, Line, LineKind, Seller,
    Totals,
};
pub use invoice_number::{InvoiceNumber, InvoiceNumberError, ProvinceCode};
pub use money::{Amount, DecimalError, Quantity, UnitPrice, round_fen, round_unit_price};
pub use order::{
    ItemInput, MAX_LINES, Order, OrderId, OrderIdError, PartyInput, PriceMode, Scalar, TotalsInput,
    not_printable,
};
pub use tax_code::{
    CatalogEntry, CatalogError, OFFICIAL_VERSION, TaxCatalog, TaxClassificationCode,
    TaxClassificationCodeError, parent_code,
};
pub use tax_rate::{TaxRate, TaxRateError, quantity_price_matches};
pub use taxpayer_id::{
    PersonalIdNumber, PersonalIdNumberError, TaxpayerId, TaxpayerIdError, TaxpayerIdKind,
    USCC_ALPHABET, uscc_check_character,
};
pub use upper::{parse_chinese_upper, to_chinese_upper};
