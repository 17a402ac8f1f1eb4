//! Red invoices (红字发票): the red-letter confirmation form (红字发票信息确认单) and the rules a
//! red invoice obeys against its blue one.
//!
//! Rules (research note `shudianpiao-format.md` §5 and the foundation issue):
//! - only a blue invoice can be reversed, by reds with the same seller, buyer and invoice type;
//! - reason 01 开票有误 reverses everything that remains (full red only); 02 销货退回,
//!   03 服务中止 and 04 销售折让 may reverse named lines partially;
//! - per blue line (a normal line together with its discount line), the reds' cumulative amount,
//!   tax and quantity never exceed the blue's; a fully reversed blue takes no more reds;
//! - every amount on a red invoice is negative.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::invoice::{DraftParts, Invoice, InvoiceDraft, InvoiceKind, Line, LineKind, LineParts};
use crate::invoice_number::InvoiceNumber;
use crate::money::{Amount, Quantity};
use crate::order::OrderId;

/// 冲红原因 (reason code `chyyDm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum RedReason {
    /// 01 开票有误: full reversal only.
    IssuingError,
    /// 02 销货退回.
    SalesReturn,
    /// 03 服务中止.
    ServiceStopped,
    /// 04 销售折让.
    SalesAllowance,
}

impl RedReason {
    /// Parses the two-digit code `01`–`04`.
    ///
    /// # Errors
    /// [`RedError::UnknownReason`] for any other text.
    pub fn parse(code: &str) -> Result<Self, RedError> {
        match code {
            "01" => Ok(Self::IssuingError),
            "02" => Ok(Self::SalesReturn),
            "03" => Ok(Self::ServiceStopped),
            "04" => Ok(Self::SalesAllowance),
            other => Err(RedError::UnknownReason {
                code: other.to_owned(),
            }),
        }
    }

    /// The two-digit code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::IssuingError => "01",
            Self::SalesReturn => "02",
            Self::ServiceStopped => "03",
            Self::SalesAllowance => "04",
        }
    }

    /// The Chinese label, e.g. 销货退回.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::IssuingError => "开票有误",
            Self::SalesReturn => "销货退回",
            Self::ServiceStopped => "服务中止",
            Self::SalesAllowance => "销售折让",
        }
    }

    /// Whether a red with this reason may reverse part of the blue.
    #[must_use]
    pub fn allows_partial(self) -> bool {
        self != Self::IssuingError
    }
}

impl From<RedReason> for &'static str {
    fn from(r: RedReason) -> Self {
        r.code()
    }
}

/// 红字发票信息确认单编号: 20 digits (observed as 6-digit county code + YYMMDD + 8-digit sequence).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct RedLetterFormNumber {
    value: String,
}

impl RedLetterFormNumber {
    /// Parses 20 digits.
    ///
    /// # Errors
    /// [`RedError::FormNumber`] for anything else.
    pub fn parse(text: &str) -> Result<Self, RedError> {
        if text.len() != 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RedError::FormNumber);
        }
        Ok(Self {
            value: text.to_owned(),
        })
    }

    /// The number's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The 12-digit prefix of the forms a seller opens on `date`: its 6-digit division code
    /// (digits 3–8 of the credit code; `000000` when those are not digits) and `YYMMDD`.
    #[must_use]
    pub fn day_prefix(seller: &str, date: time::Date) -> String {
        let county = seller
            .get(2..8)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("000000");
        format!(
            "{county}{:02}{:02}{:02}",
            date.year() % 100,
            u8::from(date.month()),
            date.day()
        )
    }

    /// The form `sequence` of a [`RedLetterFormNumber::day_prefix`].
    ///
    /// # Errors
    /// [`RedError::FormNumber`] when the result is not 20 digits.
    pub fn in_day(prefix: &str, sequence: i64) -> Result<Self, RedError> {
        Self::parse(&format!("{prefix}{sequence:08}"))
    }
}

impl fmt::Display for RedLetterFormNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl From<RedLetterFormNumber> for String {
    fn from(n: RedLetterFormNumber) -> Self {
        n.value
    }
}

/// Who entered the form (录入方身份).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// 销方 (code 0).
    Seller,
    /// 购方 (code 1).
    Buyer,
}

/// Whether the other side must confirm the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The buyer has not used the blue invoice (no 用途确认/入账确认): the seller's form is
    /// effective at once (status 01) — full red only.
    NotRequired,
    /// The other side must confirm within 72 hours.
    Required,
}

/// 红字确认单状态 (`hzqrxxztDm`), in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum RedLetterFormStatus {
    /// 01 无需确认.
    NoConfirmationNeeded,
    /// 02 销方录入待购方确认.
    AwaitingBuyer,
    /// 03 购方录入待销方确认.
    AwaitingSeller,
    /// 04 购销双方已确认.
    Confirmed,
    /// 05 作废（销方录入购方否认）.
    DeniedByBuyer,
    /// 06 作废（购方录入销方否认）.
    DeniedBySeller,
    /// 07 作废（超72小时未确认）.
    Expired,
    /// 08 作废（发起方已撤销）.
    Withdrawn,
    /// 09 作废（确认后撤销）.
    WithdrawnAfterConfirmation,
}

impl RedLetterFormStatus {
    /// The two-digit status code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::NoConfirmationNeeded => "01",
            Self::AwaitingBuyer => "02",
            Self::AwaitingSeller => "03",
            Self::Confirmed => "04",
            Self::DeniedByBuyer => "05",
            Self::DeniedBySeller => "06",
            Self::Expired => "07",
            Self::Withdrawn => "08",
            Self::WithdrawnAfterConfirmation => "09",
        }
    }

    /// Whether a red invoice may be issued on a form in this status (01 and 04).
    #[must_use]
    pub fn is_usable(self) -> bool {
        matches!(self, Self::NoConfirmationNeeded | Self::Confirmed)
    }
}

impl From<RedLetterFormStatus> for &'static str {
    fn from(s: RedLetterFormStatus) -> Self {
        s.code()
    }
}

/// What a red reverses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "lines", rename_all = "snake_case")]
pub enum RedScope {
    /// 全额红冲: everything that remains of the blue.
    Full,
    /// 部分红冲: named lines, by amount or quantity.
    Partial(Vec<PartialReversal>),
}

/// One line of a partial red.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartialReversal {
    /// 1-based number (序号) of the blue's normal line.
    pub line: u32,
    /// Tax-exclusive amount to reverse (positive), or …
    pub amount: Option<Amount>,
    /// … the quantity to reverse (positive), priced at the blue's unit price.
    pub quantity: Option<Quantity>,
}

/// 红字发票信息确认单: the form a red invoice is issued against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedLetterForm {
    number: RedLetterFormNumber,
    blue_number: InvoiceNumber,
    reason: RedReason,
    initiator: Initiator,
    status: RedLetterFormStatus,
    scope: RedScope,
}

impl RedLetterForm {
    /// Opens a form against a blue invoice.
    ///
    /// # Errors
    /// [`RedError::PartialNotAllowed`] for a partial scope with reason 01 or without buyer
    /// confirmation; [`RedError::ConfirmationRequired`] when the buyer opens a form that needs
    /// no confirmation (only the seller may).
    pub fn open(
        number: RedLetterFormNumber,
        blue_number: InvoiceNumber,
        reason: RedReason,
        initiator: Initiator,
        confirmation: Confirmation,
        scope: RedScope,
    ) -> Result<Self, RedError> {
        let partial = matches!(scope, RedScope::Partial(_));
        if partial && (!reason.allows_partial() || confirmation == Confirmation::NotRequired) {
            return Err(RedError::PartialNotAllowed {
                reason: reason.code(),
            });
        }
        let status = match (confirmation, initiator) {
            (Confirmation::NotRequired, Initiator::Seller) => {
                RedLetterFormStatus::NoConfirmationNeeded
            }
            (Confirmation::NotRequired, Initiator::Buyer) => {
                return Err(RedError::ConfirmationRequired);
            }
            (Confirmation::Required, Initiator::Seller) => RedLetterFormStatus::AwaitingBuyer,
            (Confirmation::Required, Initiator::Buyer) => RedLetterFormStatus::AwaitingSeller,
        };
        Ok(Self {
            number,
            blue_number,
            reason,
            initiator,
            status,
            scope,
        })
    }

    /// The seller opens a form; when the buyer has confirmed it too (`buyer_confirmed`), it
    /// is confirmed at once (04), otherwise it needs no confirmation (01, full reds only).
    ///
    /// # Errors
    /// As [`RedLetterForm::open`].
    pub fn open_by_seller(
        number: RedLetterFormNumber,
        blue_number: InvoiceNumber,
        reason: RedReason,
        scope: RedScope,
        buyer_confirmed: bool,
    ) -> Result<Self, RedError> {
        let confirmation = if buyer_confirmed {
            Confirmation::Required
        } else {
            Confirmation::NotRequired
        };
        let form = Self::open(
            number,
            blue_number,
            reason,
            Initiator::Seller,
            confirmation,
            scope,
        )?;
        if buyer_confirmed {
            form.confirm()
        } else {
            Ok(form)
        }
    }

    /// The other side confirms (02/03 → 04).
    ///
    /// # Errors
    /// [`RedError::FormTransition`] from any other status.
    pub fn confirm(self) -> Result<Self, RedError> {
        self.transition("confirm", |s| match s {
            RedLetterFormStatus::AwaitingBuyer | RedLetterFormStatus::AwaitingSeller => {
                Some(RedLetterFormStatus::Confirmed)
            }
            _ => None,
        })
    }

    /// The other side denies (02 → 05, 03 → 06).
    ///
    /// # Errors
    /// [`RedError::FormTransition`] from any other status.
    pub fn deny(self) -> Result<Self, RedError> {
        self.transition("deny", |s| match s {
            RedLetterFormStatus::AwaitingBuyer => Some(RedLetterFormStatus::DeniedByBuyer),
            RedLetterFormStatus::AwaitingSeller => Some(RedLetterFormStatus::DeniedBySeller),
            _ => None,
        })
    }

    /// Nobody confirmed within 72 hours (02/03 → 07).
    ///
    /// # Errors
    /// [`RedError::FormTransition`] from any other status.
    pub fn expire(self) -> Result<Self, RedError> {
        self.transition("expire", |s| match s {
            RedLetterFormStatus::AwaitingBuyer | RedLetterFormStatus::AwaitingSeller => {
                Some(RedLetterFormStatus::Expired)
            }
            _ => None,
        })
    }

    /// The initiator withdraws (01/02/03 → 08, 04 → 09).
    ///
    /// # Errors
    /// [`RedError::FormTransition`] from a void status.
    pub fn withdraw(self) -> Result<Self, RedError> {
        self.transition("withdraw", |s| match s {
            RedLetterFormStatus::NoConfirmationNeeded
            | RedLetterFormStatus::AwaitingBuyer
            | RedLetterFormStatus::AwaitingSeller => Some(RedLetterFormStatus::Withdrawn),
            RedLetterFormStatus::Confirmed => Some(RedLetterFormStatus::WithdrawnAfterConfirmation),
            _ => None,
        })
    }

    fn transition(
        mut self,
        action: &'static str,
        next: impl FnOnce(RedLetterFormStatus) -> Option<RedLetterFormStatus>,
    ) -> Result<Self, RedError> {
        self.status = next(self.status).ok_or(RedError::FormTransition {
            from: self.status.code(),
            action,
        })?;
        Ok(self)
    }

    /// 确认单编号.
    #[must_use]
    pub fn number(&self) -> &RedLetterFormNumber {
        &self.number
    }
    /// The blue invoice it reverses.
    #[must_use]
    pub fn blue_number(&self) -> &InvoiceNumber {
        &self.blue_number
    }
    /// 冲红原因.
    #[must_use]
    pub fn reason(&self) -> RedReason {
        self.reason
    }
    /// Who entered it.
    #[must_use]
    pub fn initiator(&self) -> Initiator {
        self.initiator
    }
    /// Current status.
    #[must_use]
    pub fn status(&self) -> RedLetterFormStatus {
        self.status
    }
    /// What it reverses.
    #[must_use]
    pub fn scope(&self) -> &RedScope {
        &self.scope
    }
}

/// What a red invoice records about the blue one it reverses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedReference {
    /// 被红冲蓝字发票号码.
    pub blue_number: InvoiceNumber,
    /// 红字发票信息确认单编号.
    pub form_number: RedLetterFormNumber,
    /// 冲红原因.
    pub reason: RedReason,
}

/// What remains of one blue line (normal line plus its discount) after the reds so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineBalance {
    /// 1-based number of the blue's normal line.
    pub line: u32,
    /// Remaining tax-exclusive amount.
    pub amount: Amount,
    /// Remaining tax.
    pub tax: Amount,
    /// Remaining quantity, when the blue line has one.
    pub quantity: Option<Quantity>,
    /// Whether no red has touched this line yet.
    pub untouched: bool,
}

/// Why a red invoice cannot be planned or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedError {
    /// A 开票人 no invoice may print: too long, control or invisible characters.
    #[error("drawer {0}")]
    Drawer(String),
    /// A reason code outside 01–04.
    #[error(
        "unknown red reason `{code}`; use 01 开票有误, 02 销货退回, 03 服务中止 or 04 销售折让"
    )]
    UnknownReason {
        /// The refused code.
        code: String,
    },
    /// A form number that is not 20 digits.
    #[error("a red-letter form number is 20 digits")]
    FormNumber,
    /// Only the seller may open a form that needs no confirmation.
    #[error("a form opened by the buyer always needs the seller's confirmation")]
    ConfirmationRequired,
    /// A form status change that the workflow does not allow.
    #[error("cannot {action} a red-letter form in status {from}")]
    FormTransition {
        /// Status code before.
        from: &'static str,
        /// The attempted action.
        action: &'static str,
    },
    /// The form is not in status 01 or 04.
    #[error("the red-letter form is in status {status}; a red invoice needs status 01 or 04")]
    FormNotUsable {
        /// Its status code.
        status: &'static str,
    },
    /// The form names another blue invoice.
    #[error("the red-letter form reverses {form_blue}, not {blue}")]
    FormForAnotherInvoice {
        /// The blue named by the form.
        form_blue: InvoiceNumber,
        /// The blue given.
        blue: InvoiceNumber,
    },
    /// The invoice to reverse is itself red.
    #[error("invoice {number} is a red invoice; only blue invoices can be reversed")]
    RedOfRed {
        /// Its number.
        number: InvoiceNumber,
    },
    /// Nothing remains of the blue.
    #[error("blue invoice {number} is already fully reversed")]
    FullyReversed {
        /// Its number.
        number: InvoiceNumber,
    },
    /// A red in the history does not belong to this blue or names an unknown line.
    #[error("red invoice {red} does not reverse blue invoice {blue} line by line")]
    InconsistentHistory {
        /// The red in question.
        red: String,
        /// The blue.
        blue: InvoiceNumber,
    },
    /// Reason 01, or a form without confirmation, allows full red only.
    #[error("reason {reason} (or a form without buyer confirmation) allows a full red only")]
    PartialNotAllowed {
        /// The reason code.
        reason: &'static str,
    },
    /// A partial red naming no lines.
    #[error("a partial red names at least one line")]
    NoLines,
    /// A line number the blue does not have.
    #[error("the blue invoice has no line {line}")]
    UnknownLine {
        /// The number given.
        line: u32,
    },
    /// A discount line named; discounts are reversed with their line.
    #[error("line {line} is a discount line; name the line it discounts")]
    DiscountLine {
        /// The number given.
        line: u32,
    },
    /// A line named twice in one red.
    #[error("line {line} is named twice")]
    DuplicateLine {
        /// The number given.
        line: u32,
    },
    /// Neither or both of amount and quantity.
    #[error("line {line}: give either an amount or a quantity to reverse")]
    AmountOrQuantity {
        /// The line.
        line: u32,
    },
    /// A zero or negative amount or quantity to reverse.
    #[error("line {line}: the amount or quantity to reverse must be above zero")]
    NotPositive {
        /// The line.
        line: u32,
    },
    /// Reversal by quantity of a line without quantity and unit price.
    #[error("line {line} has no quantity and unit price; reverse it by amount")]
    NoUnitPrice {
        /// The line.
        line: u32,
    },
    /// More than remains.
    #[error("line {line}: reversing {requested} exceeds the {remaining} that remains")]
    ExceedsRemaining {
        /// The line.
        line: u32,
        /// What was asked (amount, tax or quantity).
        requested: String,
        /// What remains.
        remaining: String,
    },
    /// A red whose seller, buyer or invoice type differ from the blue's.
    #[error("a red invoice must have the blue invoice's seller, buyer and invoice type")]
    PartiesDiffer,
    /// A red invoice that is not marked red against this blue.
    #[error("the invoice is not a red invoice against {blue}")]
    NotRedAgainst {
        /// The blue.
        blue: InvoiceNumber,
    },
    /// A line on a red invoice that is not negative.
    #[error("line {index} of a red invoice must have a negative amount and no positive tax")]
    NotNegative {
        /// 1-based line number on the red.
        index: usize,
    },
    /// Reason 01 without reversing everything that remains.
    #[error("reason 01 开票有误 must reverse everything that remains")]
    NotFull,
}

/// One blue line with its discount, and the reds applied to it.
struct Group {
    line: u32,
    index: usize,
    discount: Option<usize>,
    amount: Amount,
    tax: Amount,
    quantity: Option<Quantity>,
    untouched: bool,
}

fn groups(blue: &Invoice) -> Result<Vec<Group>, RedError> {
    if blue.draft().is_red() {
        return Err(RedError::RedOfRed {
            number: blue.number().clone(),
        });
    }
    let mut out: Vec<Group> = Vec::new();
    for (i, l) in blue.draft().lines().iter().enumerate() {
        match (l.kind(), out.last_mut()) {
            (LineKind::Discount, Some(g)) if g.discount.is_none() => {
                g.discount = Some(i);
                g.amount = g.amount + l.amount();
                g.tax = g.tax + l.tax();
            }
            _ => out.push(Group {
                line: line_number(i),
                index: i,
                discount: None,
                amount: l.amount(),
                tax: l.tax(),
                quantity: l.quantity(),
                untouched: true,
            }),
        }
    }
    Ok(out)
}

fn line_number(index: usize) -> u32 {
    u32::try_from(index + 1).expect("an invoice has at most MAX_LINES lines")
}

/// Applies red lines to the groups; `Err` if a line names no group of this blue.
fn apply(
    groups: &mut [Group],
    lines: &[Line],
    red: &str,
    blue: &InvoiceNumber,
) -> Result<(), RedError> {
    let inconsistent = || RedError::InconsistentHistory {
        red: red.to_owned(),
        blue: blue.clone(),
    };
    for l in lines {
        let target = l.reverses_line().ok_or_else(inconsistent)?;
        let g = groups
            .iter_mut()
            .find(|g| g.line == target)
            .ok_or_else(inconsistent)?;
        g.amount = g.amount + l.amount();
        g.tax = g.tax + l.tax();
        g.quantity = match (g.quantity, l.quantity()) {
            (Some(q), Some(rq)) => {
                Some(Quantity::from_decimal(q.value() + rq.value()).map_err(|_| inconsistent())?)
            }
            (q, _) => q,
        };
        g.untouched = false;
    }
    Ok(())
}

fn history(blue: &Invoice, prior_reds: &[Invoice]) -> Result<Vec<Group>, RedError> {
    let mut gs = groups(blue)?;
    for red in prior_reds {
        let against_blue =
            matches!(red.draft().kind(), InvoiceKind::Red(r) if r.blue_number == *blue.number());
        if !against_blue {
            return Err(RedError::InconsistentHistory {
                red: red.number().to_string(),
                blue: blue.number().clone(),
            });
        }
        apply(
            &mut gs,
            red.draft().lines(),
            red.number().as_str(),
            blue.number(),
        )?;
    }
    Ok(gs)
}

/// What remains of each line of a blue invoice after the given reds.
///
/// # Errors
/// [`RedError::RedOfRed`] or [`RedError::InconsistentHistory`].
pub fn remaining(blue: &Invoice, prior_reds: &[Invoice]) -> Result<Vec<LineBalance>, RedError> {
    Ok(history(blue, prior_reds)?
        .iter()
        .map(|g| LineBalance {
            line: g.line,
            amount: g.amount,
            tax: g.tax,
            quantity: g.quantity,
            untouched: g.untouched,
        })
        .collect())
}

/// Plans the red invoice a usable form asks for: checks every rule and computes the negative
/// lines. The result still needs a number (and a signature) to become an invoice. Its 开票人 is
/// `drawer`, or the blue invoice's when none is given.
///
/// # Errors
/// [`RedError`] naming the first rule the request breaks.
pub fn plan_red(
    blue: &Invoice,
    prior_reds: &[Invoice],
    form: &RedLetterForm,
    order_id: Option<OrderId>,
    drawer: Option<String>,
) -> Result<InvoiceDraft, RedError> {
    if form.blue_number() != blue.number() {
        return Err(RedError::FormForAnotherInvoice {
            form_blue: form.blue_number().clone(),
            blue: blue.number().clone(),
        });
    }
    if !form.status().is_usable() {
        return Err(RedError::FormNotUsable {
            status: form.status().code(),
        });
    }
    if let Some(d) = &drawer {
        check_drawer(d)?;
    }
    let mut gs = history(blue, prior_reds)?;
    if gs.iter().all(|g| g.amount.is_zero() && g.tax.is_zero()) {
        return Err(RedError::FullyReversed {
            number: blue.number().clone(),
        });
    }
    let blue_lines = blue.draft().lines();
    let lines = match form.scope() {
        RedScope::Full => full_lines(&gs, blue_lines),
        RedScope::Partial(parts) => {
            if !form.reason().allows_partial() {
                return Err(RedError::PartialNotAllowed {
                    reason: form.reason().code(),
                });
            }
            partial_lines(&mut gs, blue_lines, parts)?
        }
    };
    let blue_draft = blue.draft();
    let remarks = format!(
        "被红冲蓝字数电发票号码：{} 红字发票信息确认单编号：{}",
        blue.number(),
        form.number()
    );
    Ok(InvoiceDraft::from_parts(DraftParts {
        order_id,
        kind: InvoiceKind::Red(RedReference {
            blue_number: blue.number().clone(),
            form_number: form.number().clone(),
            reason: form.reason(),
        }),
        invoice_type: blue_draft.invoice_type(),
        seller: blue_draft.seller().clone(),
        buyer: blue_draft.buyer().clone(),
        lines,
        remarks: Some(remarks),
        drawer: drawer.or_else(|| blue_draft.drawer().map(str::to_owned)),
    }))
}

/// The rules an order's `drawer` follows, for a red's.
fn check_drawer(d: &str) -> Result<(), RedError> {
    let len = d.chars().count();
    if len > crate::order::DRAWER_MAX {
        return Err(RedError::Drawer(format!(
            "is {len} characters long; at most {} allowed",
            crate::order::DRAWER_MAX
        )));
    }
    if let Some(c) = d
        .chars()
        .find(|c| c.is_control() || crate::order::not_printable(*c))
    {
        return Err(RedError::Drawer(format!(
            "contains U+{:04X}, which no invoice carries",
            u32::from(c)
        )));
    }
    Ok(())
}

fn red_line(
    blue: &Line,
    group: u32,
    quantity: Option<Quantity>,
    amount: Amount,
    tax: Amount,
) -> Line {
    Line::from_parts(LineParts {
        kind: LineKind::Normal,
        name: blue.name().to_owned(),
        short_name: blue.short_name().to_owned(),
        tax_code: blue.tax_code().clone(),
        specification: blue.specification().map(str::to_owned),
        unit: blue.unit().map(str::to_owned),
        quantity: quantity.map(|q| -q),
        unit_price: quantity.and(blue.unit_price()),
        amount: -amount,
        tax: -tax,
        tax_rate: blue.tax_rate(),
        reverses_line: Some(group),
    })
}

fn full_lines(gs: &[Group], blue_lines: &[Line]) -> Vec<Line> {
    gs.iter()
        .filter(|g| !(g.amount.is_zero() && g.tax.is_zero()))
        .map(|g| {
            // An untouched line without discount is mirrored with its quantity; otherwise the
            // net remainder is reversed as an amount.
            let quantity = (g.untouched && g.discount.is_none())
                .then_some(g.quantity)
                .flatten();
            red_line(&blue_lines[g.index], g.line, quantity, g.amount, g.tax)
        })
        .collect()
}

fn partial_lines(
    gs: &mut [Group],
    blue_lines: &[Line],
    parts: &[PartialReversal],
) -> Result<Vec<Line>, RedError> {
    if parts.is_empty() {
        return Err(RedError::NoLines);
    }
    let mut seen = BTreeMap::new();
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let n = part.line;
        if seen.insert(n, ()).is_some() {
            return Err(RedError::DuplicateLine { line: n });
        }
        let Some(g) = gs.iter_mut().find(|g| g.line == n) else {
            let is_discount = n >= 1
                && blue_lines
                    .get(n as usize - 1)
                    .is_some_and(|l| l.kind() == LineKind::Discount);
            return Err(if is_discount {
                RedError::DiscountLine { line: n }
            } else {
                RedError::UnknownLine { line: n }
            });
        };
        let blue = &blue_lines[g.index];
        let exceeds = |requested: String, remaining: String| RedError::ExceedsRemaining {
            line: n,
            requested,
            remaining,
        };
        let (amount, quantity) = match (part.amount, part.quantity) {
            (Some(a), None) => {
                if a.is_negative() || a.is_zero() {
                    return Err(RedError::NotPositive { line: n });
                }
                (a, None)
            }
            (None, Some(q)) => {
                if q.value().is_sign_negative() || q.value().is_zero() {
                    return Err(RedError::NotPositive { line: n });
                }
                let (Some(left), Some(price)) = (g.quantity, blue.unit_price()) else {
                    return Err(RedError::NoUnitPrice { line: n });
                };
                if q > left {
                    return Err(exceeds(q.to_string(), left.to_string()));
                }
                let amount = if q == left {
                    g.amount
                } else {
                    Amount::from_rounded(q.value() * price.value())
                };
                (amount, Some(q))
            }
            _ => return Err(RedError::AmountOrQuantity { line: n }),
        };
        if amount > g.amount {
            return Err(exceeds(amount.to_string(), g.amount.to_string()));
        }
        let tax = if amount == g.amount {
            g.tax
        } else {
            blue.tax_rate().tax_on_exclusive(amount).min(g.tax)
        };
        g.amount = g.amount - amount;
        g.tax = g.tax - tax;
        if let (Some(left), Some(q)) = (g.quantity, quantity) {
            g.quantity = Some(
                Quantity::from_decimal(left.value() - q.value()).expect("q <= left, both in range"),
            );
        }
        g.untouched = false;
        out.push(red_line(blue, n, quantity, amount, tax));
    }
    Ok(out)
}

/// Checks a red invoice (from any issuer) against its blue and the reds before it: same
/// parties, negative lines naming real blue lines, never more than remains, and reason 01
/// reverses everything.
///
/// # Errors
/// [`RedError`] naming the first broken rule.
pub fn check_red(
    red: &InvoiceDraft,
    blue: &Invoice,
    prior_reds: &[Invoice],
) -> Result<(), RedError> {
    let InvoiceKind::Red(reference) = red.kind() else {
        return Err(RedError::NotRedAgainst {
            blue: blue.number().clone(),
        });
    };
    if reference.blue_number != *blue.number() {
        return Err(RedError::NotRedAgainst {
            blue: blue.number().clone(),
        });
    }
    let b = blue.draft();
    if red.seller() != b.seller()
        || red.buyer() != b.buyer()
        || red.invoice_type() != b.invoice_type()
    {
        return Err(RedError::PartiesDiffer);
    }
    let mut gs = history(blue, prior_reds)?;
    if gs.iter().all(|g| g.amount.is_zero() && g.tax.is_zero()) {
        return Err(RedError::FullyReversed {
            number: blue.number().clone(),
        });
    }
    if red.lines().is_empty() {
        return Err(RedError::NoLines);
    }
    for (i, l) in red.lines().iter().enumerate() {
        if !l.amount().is_negative() || (!l.tax().is_negative() && !l.tax().is_zero()) {
            return Err(RedError::NotNegative { index: i + 1 });
        }
    }
    for l in red.lines() {
        let target = l.reverses_line();
        let Some(g) = gs.iter_mut().find(|g| Some(g.line) == target) else {
            return Err(RedError::UnknownLine {
                line: target.unwrap_or(0),
            });
        };
        let over_quantity = match (g.quantity, l.quantity()) {
            (Some(left), Some(q)) => q.value().abs() > left.value(),
            _ => false,
        };
        if -l.amount() > g.amount || -l.tax() > g.tax || over_quantity {
            return Err(RedError::ExceedsRemaining {
                line: g.line,
                requested: format!("{} (tax {})", -l.amount(), -l.tax()),
                remaining: format!("{} (tax {})", g.amount, g.tax),
            });
        }
        apply(
            std::slice::from_mut(g),
            std::slice::from_ref(l),
            "(checked red)",
            blue.number(),
        )?;
    }
    if !reference.reason.allows_partial()
        && !gs.iter().all(|g| g.amount.is_zero() && g.tax.is_zero())
    {
        return Err(RedError::NotFull);
    }
    Ok(())
}
