//! The invoice itself: [`InvoiceDraft`] (validated, computed, not yet numbered) and [`Invoice`]
//! (numbered and dated; signing is the issuing device's job).

use serde::Serialize;
use time::PrimitiveDateTime;

use crate::invoice_number::{InvoiceNumber, InvoiceNumberError};
use crate::money::{Amount, Quantity, UnitPrice};
use crate::order::OrderId;
use crate::red::RedReference;
use crate::tax_code::TaxClassificationCode;
use crate::tax_rate::TaxRate;
use crate::taxpayer_id::{PersonalIdNumber, TaxpayerId};
use crate::upper::to_chinese_upper;

/// 票种: the kind of VAT invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceType {
    /// 增值税专用发票: the buyer may deduct input VAT; buyer tax id, address/phone and
    /// bank/account are mandatory.
    Special,
    /// 普通发票.
    Ordinary,
}

impl InvoiceType {
    /// The wire form, `special` or `ordinary`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Special => "special",
            Self::Ordinary => "ordinary",
        }
    }

    /// The printed name: 增值税专用发票 or 普通发票.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Special => "增值税专用发票",
            Self::Ordinary => "普通发票",
        }
    }

    /// The page title, e.g. 电子发票（普通发票）.
    #[must_use]
    pub fn title(self) -> String {
        format!("电子发票（{}）", self.label())
    }
}

/// Whether an invoice is blue (蓝字, a sale) or red (红字, reversing a blue one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InvoiceKind {
    /// 蓝字发票.
    Blue,
    /// 红字发票, with what it reverses.
    Red(RedReference),
}

/// The seller (销售方).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seller {
    /// 统一社会信用代码/纳税人识别号.
    pub taxpayer_id: TaxpayerId,
    /// 名称.
    pub name: String,
    /// 地址.
    pub address: Option<String>,
    /// 电话.
    pub phone: Option<String>,
    /// 开户银行.
    pub bank_name: Option<String>,
    /// 银行账号.
    pub bank_account: Option<String>,
}

/// Whether the buyer is an organisation or a natural person (自然人).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuyerKind {
    /// A company or other organisation; has a taxpayer id.
    Organization,
    /// A natural person; may give a citizen identity number, never a special invoice.
    NaturalPerson,
}

/// The buyer (购买方). Its `Debug` masks the personal data (see [`crate::mask`]), so a
/// stray `?buyer` in a log line leaks nothing.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Buyer {
    /// Organisation or natural person.
    pub kind: BuyerKind,
    /// 统一社会信用代码/纳税人识别号 (organisations).
    pub taxpayer_id: Option<TaxpayerId>,
    /// 公民身份号码 (natural persons, optional; personal data).
    pub id_number: Option<PersonalIdNumber>,
    /// 名称 / 姓名.
    pub name: String,
    /// 地址.
    pub address: Option<String>,
    /// 电话.
    pub phone: Option<String>,
    /// 开户银行.
    pub bank_name: Option<String>,
    /// 银行账号.
    pub bank_account: Option<String>,
    /// Where the invoice is delivered.
    pub email: Option<String>,
}

impl std::fmt::Debug for Buyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::mask;
        let person = self.kind == BuyerKind::NaturalPerson;
        f.debug_struct("Buyer")
            .field("kind", &self.kind)
            .field("taxpayer_id", &self.taxpayer_id)
            .field("id_number", &self.id_number)
            .field(
                "name",
                &if person {
                    mask::person_name(&self.name)
                } else {
                    self.name.clone()
                },
            )
            .field("address", &self.address.as_deref().map(mask::address))
            .field("phone", &self.phone.as_deref().map(mask::phone))
            .field("bank_name", &self.bank_name)
            .field(
                "bank_account",
                &self.bank_account.as_deref().map(mask::bank_account),
            )
            .field("email", &self.email.as_deref().map(mask::email))
            .finish()
    }
}

/// 发票行性质: a normal line or a discount line (折扣行) following the line it discounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// 正常行.
    Normal,
    /// 折扣行: negative amount, same code and rate as the line before it.
    Discount,
}

/// One line of an invoice, with every amount tax-exclusive and computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    kind: LineKind,
    name: String,
    short_name: String,
    tax_code: TaxClassificationCode,
    specification: Option<String>,
    unit: Option<String>,
    quantity: Option<Quantity>,
    unit_price: Option<UnitPrice>,
    amount: Amount,
    tax_rate: TaxRate,
    tax: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverses_line: Option<u32>,
}

/// The parts of a [`Line`], for the crate's own constructors.
pub(crate) struct LineParts {
    pub(crate) kind: LineKind,
    pub(crate) name: String,
    pub(crate) short_name: String,
    pub(crate) tax_code: TaxClassificationCode,
    pub(crate) specification: Option<String>,
    pub(crate) unit: Option<String>,
    pub(crate) quantity: Option<Quantity>,
    pub(crate) unit_price: Option<UnitPrice>,
    pub(crate) amount: Amount,
    pub(crate) tax_rate: TaxRate,
    pub(crate) tax: Amount,
    pub(crate) reverses_line: Option<u32>,
}

impl Line {
    pub(crate) fn from_parts(p: LineParts) -> Self {
        Self {
            kind: p.kind,
            name: p.name,
            short_name: p.short_name,
            tax_code: p.tax_code,
            specification: p.specification,
            unit: p.unit,
            quantity: p.quantity,
            unit_price: p.unit_price,
            amount: p.amount,
            tax_rate: p.tax_rate,
            tax: p.tax,
            reverses_line: p.reverses_line,
        }
    }

    /// Normal or discount line.
    #[must_use]
    pub fn kind(&self) -> LineKind {
        self.kind
    }
    /// The issuer's own item name (without the `*简称*` prefix).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The tax classification short name (简称).
    #[must_use]
    pub fn short_name(&self) -> &str {
        &self.short_name
    }
    /// The name as printed: `*简称*name`, e.g. `*信息技术服务*软件开发服务`.
    #[must_use]
    pub fn printed_name(&self) -> String {
        format!("*{}*{}", self.short_name, self.name)
    }
    /// 商品和服务税收分类编码.
    #[must_use]
    pub fn tax_code(&self) -> &TaxClassificationCode {
        &self.tax_code
    }
    /// 规格型号.
    #[must_use]
    pub fn specification(&self) -> Option<&str> {
        self.specification.as_deref()
    }
    /// 单位.
    #[must_use]
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
    /// 数量 (negative on red lines).
    #[must_use]
    pub fn quantity(&self) -> Option<Quantity> {
        self.quantity
    }
    /// 单价, tax-exclusive.
    #[must_use]
    pub fn unit_price(&self) -> Option<UnitPrice> {
        self.unit_price
    }
    /// 金额, tax-exclusive.
    #[must_use]
    pub fn amount(&self) -> Amount {
        self.amount
    }
    /// 税率/征收率.
    #[must_use]
    pub fn tax_rate(&self) -> TaxRate {
        self.tax_rate
    }
    /// 税额.
    #[must_use]
    pub fn tax(&self) -> Amount {
        self.tax
    }
    /// Amount plus tax.
    #[must_use]
    pub fn total(&self) -> Amount {
        self.amount + self.tax
    }
    /// On a red invoice: the 1-based number of the blue line this line reverses.
    #[must_use]
    pub fn reverses_line(&self) -> Option<u32> {
        self.reverses_line
    }
}

/// The three totals of an invoice, always computed from its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// 合计金额 (tax-exclusive).
    pub amount: Amount,
    /// 合计税额.
    pub tax: Amount,
    /// 价税合计.
    pub total: Amount,
}

impl Totals {
    /// Sums the lines.
    #[must_use]
    pub fn of(lines: &[Line]) -> Self {
        let amount: Amount = lines.iter().map(Line::amount).sum();
        let tax: Amount = lines.iter().map(Line::tax).sum();
        Self {
            amount,
            tax,
            total: amount + tax,
        }
    }
}

/// A validated invoice with every amount computed, not yet numbered or signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceDraft {
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<OrderId>,
    #[serde(flatten)]
    kind: InvoiceKind,
    invoice_type: InvoiceType,
    seller: Seller,
    buyer: Buyer,
    lines: Vec<Line>,
    totals: Totals,
    total_in_words: String,
    remarks: Option<String>,
    drawer: Option<String>,
}

/// The parts of an [`InvoiceDraft`], for the crate's own constructors.
pub(crate) struct DraftParts {
    pub(crate) order_id: Option<OrderId>,
    pub(crate) kind: InvoiceKind,
    pub(crate) invoice_type: InvoiceType,
    pub(crate) seller: Seller,
    pub(crate) buyer: Buyer,
    pub(crate) lines: Vec<Line>,
    pub(crate) remarks: Option<String>,
    pub(crate) drawer: Option<String>,
}

impl InvoiceDraft {
    /// Builds a draft, computing totals and the upper-case total.
    pub(crate) fn from_parts(p: DraftParts) -> Self {
        let totals = Totals::of(&p.lines);
        Self {
            order_id: p.order_id,
            kind: p.kind,
            invoice_type: p.invoice_type,
            seller: p.seller,
            buyer: p.buyer,
            total_in_words: to_chinese_upper(totals.total),
            lines: p.lines,
            totals,
            remarks: p.remarks,
            drawer: p.drawer,
        }
    }

    /// The ERP order this draft came from, if any.
    #[must_use]
    pub fn order_id(&self) -> Option<&OrderId> {
        self.order_id.as_ref()
    }
    /// Blue or red.
    #[must_use]
    pub fn kind(&self) -> &InvoiceKind {
        &self.kind
    }
    /// Whether this is a red invoice.
    #[must_use]
    pub fn is_red(&self) -> bool {
        matches!(self.kind, InvoiceKind::Red(_))
    }
    /// Special or ordinary.
    #[must_use]
    pub fn invoice_type(&self) -> InvoiceType {
        self.invoice_type
    }
    /// 销售方.
    #[must_use]
    pub fn seller(&self) -> &Seller {
        &self.seller
    }
    /// The draft with the seller's particulars the order left out taken from `registered`
    /// (address, phone, bank name, bank account, in that order; `None` leaves a field as it
    /// is). Totals and lines do not depend on them.
    #[must_use]
    pub fn with_seller_particulars(mut self, registered: [Option<&str>; 4]) -> Self {
        let s = &mut self.seller;
        for (field, value) in [
            &mut s.address,
            &mut s.phone,
            &mut s.bank_name,
            &mut s.bank_account,
        ]
        .into_iter()
        .zip(registered)
        {
            if field.is_none()
                && let Some(v) = value
            {
                *field = Some(v.to_owned());
            }
        }
        self
    }
    /// 购买方.
    #[must_use]
    pub fn buyer(&self) -> &Buyer {
        &self.buyer
    }
    /// The lines, in order.
    #[must_use]
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
    /// Computed totals.
    #[must_use]
    pub fn totals(&self) -> Totals {
        self.totals
    }
    /// 价税合计（大写）, with （负数） for red invoices.
    #[must_use]
    pub fn total_in_words(&self) -> &str {
        &self.total_in_words
    }
    /// 备注.
    #[must_use]
    pub fn remarks(&self) -> Option<&str> {
        self.remarks.as_deref()
    }
    /// 开票人.
    #[must_use]
    pub fn drawer(&self) -> Option<&str> {
        self.drawer.as_deref()
    }
}

/// A numbered, dated invoice (blue or red). The issuing device signs it (a later layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    number: InvoiceNumber,
    #[serde(serialize_with = "crate::datetime::serialize")]
    issued_at: PrimitiveDateTime,
    #[serde(flatten)]
    draft: InvoiceDraft,
}

impl Invoice {
    /// Gives a draft its number and issue time (China Standard Time, UTC+8).
    ///
    /// # Errors
    /// [`InvoiceNumberError::YearMismatch`] when the number's year is not the issue year.
    pub fn issue(
        draft: InvoiceDraft,
        number: InvoiceNumber,
        issued_at: PrimitiveDateTime,
    ) -> Result<Self, InvoiceNumberError> {
        number.check_issue_year(issued_at.date())?;
        Ok(Self {
            number,
            issued_at,
            draft,
        })
    }

    /// 发票号码.
    #[must_use]
    pub fn number(&self) -> &InvoiceNumber {
        &self.number
    }
    /// 开票日期 and time, China Standard Time.
    #[must_use]
    pub fn issued_at(&self) -> PrimitiveDateTime {
        self.issued_at
    }
    /// Everything else.
    #[must_use]
    pub fn draft(&self) -> &InvoiceDraft {
        &self.draft
    }
}
