//! An enterprise's agent with cloud (orders pulled, leased, acknowledged) and platform (number
//! blocks, quota, reports of what it issued).

use super::*;

/// agent → cloud: lease up to `max` pending orders of the agent's enterprise for
/// `lease_seconds`. An order leased and not acknowledged in time can be leased again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullOrders {
    /// Most orders to lease (1..=100).
    pub max: u32,
    /// Lease length (5..=3600 s).
    pub lease_seconds: u32,
    /// Also the orders still leased to this agent (its first pull after a restart: what it
    /// leased but had not stored when it stopped comes back at once, not when the lease ends).
    #[serde(default)]
    pub resume: bool,
}

/// A queued order: what cloud would have sent platform in sync mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueuedOrder {
    /// A blue order.
    Blue(IssueOrder),
    /// A red order.
    Red(RedOrder),
}

impl QueuedOrder {
    /// The order id.
    #[must_use]
    pub fn order_id(&self) -> &str {
        match self {
            Self::Blue(o) => &o.order_id,
            Self::Red(o) => &o.order_id,
        }
    }

    /// The request hash.
    #[must_use]
    pub fn request_hash(&self) -> &str {
        match self {
            Self::Blue(o) => &o.request_hash,
            Self::Red(o) => &o.request_hash,
        }
    }
}

/// cloud → agent: the orders leased, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedOrders {
    /// The orders.
    pub orders: Vec<QueuedOrder>,
}

/// How the agent handled one leased order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Issued and stored on the enterprise's premises (the invoice reaches cloud through
    /// platform).
    Issued {
        /// The invoice number.
        number: String,
    },
    /// Refused; nothing was issued.
    Refused(Refusal),
}

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAck {
    /// The order id.
    pub order_id: String,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: OrderOutcome,
}

/// agent → cloud: orders durably handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAcks {
    /// The acknowledgements.
    pub acks: Vec<OrderAck>,
}

/// agent → platform: a number block for `(year, province)`. `key` makes the request
/// idempotent: the same key returns the same block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// Idempotency key (the agent derives it from its durable state).
    pub key: String,
    /// Two-digit year.
    pub year: u8,
    /// Province code.
    pub province: u8,
}

/// agent → platform: `amount` more of the month's credit quota. Idempotent by `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRequest {
    /// Idempotency key.
    pub key: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Decimal amount asked for.
    pub amount: String,
}

/// platform → agent: quota granted for a month (may be less than asked, down to zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaGrant {
    /// `YYYY-MM`.
    pub month: String,
    /// Decimal amount granted by this request.
    pub amount: String,
}

/// agent → platform: an invoice the agent issued, with the order it was issued for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The enterprise (seller).
    pub enterprise: String,
    /// The invoice and its order.
    pub issued: Issued,
}

/// agent → platform: what the agent has to tell platform, in the order of its queue: the
/// invoices it issued (each with its order, as in [`Report`]) and tax's receipts for its
/// uploads (as in an agent's [`StatusNotice`]). Each item is checked and answered as if it
/// came alone, after the ones before it (a red after its blue, a receipt after its invoice);
/// platform records them all in one durable commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// The enterprise (seller) of every item.
    pub enterprise: String,
    /// The items, 1 to [`ReportBatch::MAX`].
    pub items: Vec<ReportItem>,
}

impl ReportBatch {
    /// Most items in one report batch: a full upload batch's invoices and their receipts.
    pub const MAX: usize = 2 * UploadBatch::MAX;
}

/// One item of a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportItem {
    /// An invoice the agent issued, with its order.
    Invoice(Issued),
    /// Tax's receipt for the agent's upload of an invoice reported before.
    Status(Box<StatusNotice>),
}

/// platform → agent: the answer to a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResults {
    /// `results[i]` answers `items[i]`: `None` when recorded (or on record already), else
    /// why not.
    pub results: Vec<Option<Refusal>>,
}

/// platform → tax: `first..=last` of a range granted to the platform is now used by
/// `uploader` (an agent); tax accepts that agent's uploads in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeAssign {
    /// The agent's identity (`agent:<name>`).
    pub uploader: String,
    /// The numbers.
    pub range: RangeGrant,
}
