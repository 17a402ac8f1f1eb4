//! The write transaction that issues invoices: what it has read, and what it will write.
//!
//! An [`Issuing`] holds what it reads until it commits — except what it changes itself, which
//! it keeps in step: on SQLite the database's write lock, from `BEGIN IMMEDIATE`; on
//! PostgreSQL the rows of the orders' enterprises ([`crate::registry::lock_enterprises`],
//! taken before anything of theirs is read: their orders, quota and blocks) and the blocks it
//! numbers from, so replicas issuing for one enterprise take turns.
//! It reads each thing once: the admission of every order of a batch in one query
//! ([`Known::read_admissions`]; the registered cloud, each order's enterprise and the order's
//! earlier request), a month's quota used and an enterprise's number block when first needed.
//! Orders issued here are remembered, so the same order twice in one batch gets the first
//! answer. What the invoices write — each invoice with its order and its queued upload, the
//! blocks' next numbers and the months' quota used — is kept and written in one round trip
//! just before the commit ([`Issuing::commit`]). A refused order has written nothing.

use std::collections::{BTreeSet, HashMap};

use fapiao_issuer::NumberBlock;
use fapiao_model::Amount;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::OrderAnswer;
use fapiao_store::{Executor, Sql, StoreError, Tx, query};

use crate::registry::{Enterprise, enterprise_from_row};

/// A write transaction issuing invoices (see the module).
pub(crate) struct Issuing {
    pub(crate) tx: Tx,
    pub(crate) known: Known,
    writes: Writes,
}

/// What a transaction has read, and changed, of orders, quotas and blocks.
#[derive(Default)]
pub(crate) struct Known {
    /// Admissions read, by `(cloud, enterprise, order_id)`.
    admissions: HashMap<(String, String, String), Admission>,
    /// Quota used per `(enterprise, month)`, counting what this transaction issued.
    pub(crate) quotas: HashMap<(String, String), Amount>,
    /// Each `(enterprise, year, province)`'s current block: its id and where it stands. A
    /// block is kept here once it has given a number, and its next sequence is written at the
    /// commit; one with none left is written at once and dropped ([`Issuing::block_spent`]).
    pub(crate) blocks: HashMap<(String, u8, u8), (i64, NumberBlock)>,
}

/// What one row of the admission query says about an order.
#[derive(Clone)]
pub(crate) struct Admission {
    /// The sending cloud is registered.
    pub(crate) cloud_known: bool,
    /// The order's enterprise, if registered.
    pub(crate) enterprise: Option<Enterprise>,
    /// The order's earlier request, if the order_id was used before.
    pub(crate) earlier: Option<Earlier>,
}

/// An order_id used before, with the hash of the request that used it.
#[derive(Clone)]
pub(crate) enum Earlier {
    /// Stored before this transaction: its invoice's number.
    Stored { hash: String, number: String },
    /// Issued in this transaction: its answer.
    Here {
        hash: String,
        answer: Box<OrderAnswer>,
    },
}

impl Earlier {
    pub(crate) fn hash(&self) -> &str {
        match self {
            Self::Stored { hash, .. } | Self::Here { hash, .. } => hash,
        }
    }
}

fn sequence(block: &NumberBlock) -> Result<i64, StoreError> {
    i64::try_from(block.next_sequence()).map_err(|e| StoreError::Data(e.to_string()))
}

/// One row per asked `[enterprise, order_id]` (`$2`, a JSON array), whatever is registered:
/// whether the cloud `$1` is, the enterprise if it is, the order if it is.
const ADMISSIONS: Sql = Sql::dialects(
    "SELECT json_extract(q.value, '$[0]') AS asked_enterprise,
        json_extract(q.value, '$[1]') AS asked_order, c.identity AS known_cloud,
        o.request_hash AS order_hash, o.number AS order_number, e.*
    FROM jsonb_each($2) q
    LEFT JOIN clouds c ON c.identity = $1
    LEFT JOIN enterprises e ON e.taxpayer_id = json_extract(q.value, '$[0]')
    LEFT JOIN orders o ON o.enterprise = json_extract(q.value, '$[0]')
        AND o.order_id = json_extract(q.value, '$[1]')",
    // Each order is looked up by its unique key (the LIMIT keeps the subquery a per-row index
    // probe): as a plain join, the planner takes `jsonb_array_elements` for 100 rows and,
    // while `orders` is small, hashes a scan of the whole table — 87 buffers and 0.7 ms for
    // one order at 7,000 orders (pg_stat_statements under `fapiao bench`).
    "SELECT q.value->>0 AS asked_enterprise, q.value->>1 AS asked_order,
        c.identity AS known_cloud, o.request_hash AS order_hash, o.number AS order_number, e.*
    FROM jsonb_array_elements($2::jsonb) q
    LEFT JOIN clouds c ON c.identity = $1
    LEFT JOIN enterprises e ON e.taxpayer_id = q.value->>0
    LEFT JOIN LATERAL (
        SELECT request_hash, number FROM orders
        WHERE enterprise = q.value->>0 AND order_id = q.value->>1 LIMIT 1
    ) o ON true",
);

impl Known {
    /// Reads the admission of every `(enterprise, order_id)` that `cloud` sends and that is
    /// not read yet, in one query.
    pub(crate) async fn read_admissions(
        &mut self,
        conn: &mut dyn Executor,
        cloud: &str,
        orders: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let asked: Vec<serde_json::Value> = orders
            .iter()
            .filter(|(e, o)| {
                !self
                    .admissions
                    .contains_key(&(cloud.to_owned(), (*e).to_owned(), (*o).to_owned()))
            })
            .map(|(e, o)| serde_json::json!([e, o]))
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let rows = query(ADMISSIONS)
            .bind(cloud)
            .bind(serde_json::Value::Array(asked).to_string())
            .fetch_all(&mut *conn)
            .await?;
        let mut enterprises: HashMap<String, Enterprise> = HashMap::new();
        for row in rows {
            let enterprise: String = row.try_get("asked_enterprise")?;
            let order: String = row.try_get("asked_order")?;
            let registered = match enterprises.get(&enterprise) {
                Some(e) => Some(e.clone()),
                None if row.try_get::<Option<String>, _>("taxpayer_id")?.is_some() => {
                    let e = enterprise_from_row(&row)?;
                    enterprises.insert(enterprise.clone(), e.clone());
                    Some(e)
                }
                None => None,
            };
            let earlier = match row.try_get::<Option<String>, _>("order_hash")? {
                Some(hash) => Some(Earlier::Stored {
                    hash,
                    number: row.try_get("order_number")?,
                }),
                None => None,
            };
            self.admissions.insert(
                (cloud.to_owned(), enterprise, order),
                Admission {
                    cloud_known: row.try_get::<Option<String>, _>("known_cloud")?.is_some(),
                    enterprise: registered,
                    earlier,
                },
            );
        }
        Ok(())
    }

    /// The admission read for an order of `cloud` ([`Self::read_admissions`] first).
    pub(crate) fn admission(
        &self,
        cloud: &str,
        enterprise: &str,
        order_id: &str,
    ) -> Option<&Admission> {
        self.admissions
            .get(&(cloud.to_owned(), enterprise.to_owned(), order_id.to_owned()))
    }

    /// Remembers an order of `cloud` issued in this transaction, for the same order again.
    pub(crate) fn issued(
        &mut self,
        cloud: &str,
        enterprise: &Enterprise,
        order_id: &str,
        hash: &str,
        answer: &OrderAnswer,
    ) {
        self.admissions.insert(
            (
                cloud.to_owned(),
                enterprise.taxpayer_id.clone(),
                order_id.to_owned(),
            ),
            Admission {
                cloud_known: true,
                enterprise: Some(enterprise.clone()),
                earlier: Some(Earlier::Here {
                    hash: hash.to_owned(),
                    answer: Box::new(answer.clone()),
                }),
            },
        );
    }
}

/// What the invoices of a transaction write, kept until it commits.
#[derive(Default)]
struct Writes {
    /// `[number, enterprise, order_id, kind, blue_number, form_number, issued_at, total,
    /// record, request_hash]` per invoice.
    invoices: Vec<serde_json::Value>,
    /// The `(enterprise, month)`s whose quota used ([`Known::quotas`]) an invoice changed.
    quotas: BTreeSet<(String, String)>,
}

/// An issued invoice as [`Issuing::stage`] keeps it.
pub(crate) struct Staged<'a> {
    pub(crate) number: &'a str,
    pub(crate) enterprise: &'a str,
    pub(crate) order_id: &'a str,
    pub(crate) request_hash: &'a str,
    pub(crate) blue_number: Option<&'a str>,
    pub(crate) form_number: Option<&'a str>,
    pub(crate) issued_at: String,
    pub(crate) total: Amount,
    /// The sealed record.
    pub(crate) record: String,
    /// `(month, used after this invoice)`.
    pub(crate) quota: (String, Amount),
    /// The version of the tax code catalog the order was validated against.
    pub(crate) catalog_version: &'a str,
}

/// What [`Issuing::commit`] writes, in one round trip: `$1` the invoices (JSON rows as
/// [`Writes::invoices`]) with their orders and their queued uploads, `$2` the blocks' next
/// sequences (`[id, next]`), held by `$5` until `$6`, `$3` the months' quota used
/// (`[enterprise, month, used]`), `$4` now. On SQLite statement after statement (a failing
/// statement stops the rest, and the commit does not happen); on PostgreSQL, which takes
/// parameters only in single statements, one statement of data-modifying `WITH` clauses.
/// The upload is queued as `crate::outbox::enqueue` queues an entry (the same columns and
/// initial values): a change to one is a change to both.
const WRITE_ISSUED: Sql = Sql::dialects(
    "INSERT INTO invoices (number, enterprise, order_id, kind, blue_number,
        form_number, issued_at, total, record, tax_status, catalog_version)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
        'pending', json_extract(value, '$[10]')
    FROM jsonb_each($1) ORDER BY key;
    INSERT INTO orders (enterprise, order_id, request_hash, number)
    SELECT json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[9]'),
        json_extract(value, '$[0]')
    FROM jsonb_each($1) ORDER BY key;
    INSERT INTO outbox (kind, number, state, attempts, next_attempt_at, created_at)
    SELECT 'upload', json_extract(value, '$[0]'), 'pending', 0, $4, $4
    FROM jsonb_each($1) ORDER BY key;
    UPDATE blocks SET next = json_extract(b.value, '$[1]'), holder = $5, held_until = $6
    FROM jsonb_each($2) b WHERE blocks.id = json_extract(b.value, '$[0]');
    INSERT INTO quota_usage (enterprise, month, used)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
    FROM jsonb_each($3) WHERE true
    ON CONFLICT (enterprise, month) DO UPDATE SET used = excluded.used",
    "WITH i AS (
        SELECT value AS v, key FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(value, key)
    ), invoices_added AS (
        INSERT INTO invoices (number, enterprise, order_id, kind, blue_number,
            form_number, issued_at, total, record, tax_status, catalog_version)
        SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, v->>7, v->>8, 'pending', v->>10
        FROM i ORDER BY key
    ), orders_added AS (
        INSERT INTO orders (enterprise, order_id, request_hash, number)
        SELECT v->>1, v->>2, v->>9, v->>0 FROM i ORDER BY key
    ), uploads_queued AS (
        INSERT INTO outbox (kind, number, state, attempts, next_attempt_at, created_at)
        SELECT 'upload', v->>0, 'pending', 0, $4, $4 FROM i ORDER BY key
    ), blocks_moved AS (
        UPDATE blocks SET next = (b.value->>1)::bigint, holder = $5, held_until = $6
        FROM jsonb_array_elements($2::jsonb) b WHERE blocks.id = (b.value->>0)::bigint
    )
    INSERT INTO quota_usage (enterprise, month, used)
    SELECT value->>0, value->>1, value->>2 FROM jsonb_array_elements($3::jsonb)
    ON CONFLICT (enterprise, month) DO UPDATE SET used = excluded.used",
);

/// How long a replica holds a block it numbers from without using it (seconds): past that,
/// another replica may take it over from its next number.
pub(crate) const BLOCK_LEASE: i64 = 600;

impl Issuing {
    /// Begins the write transaction.
    pub(crate) fn new(tx: Tx) -> Self {
        Self {
            tx,
            known: Known::default(),
            writes: Writes::default(),
        }
    }

    /// Writes a block's next sequence now (it has no numbers left), and lets it go.
    pub(crate) async fn block_spent(
        &mut self,
        id: i64,
        block: &NumberBlock,
    ) -> Result<(), StoreError> {
        query("UPDATE blocks SET next = $2, holder = NULL, held_until = NULL WHERE id = $1")
            .bind(id)
            .bind(sequence(block)?)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Keeps an issued invoice to write, with its order, its upload and the quota it used.
    pub(crate) fn stage(&mut self, s: Staged<'_>) {
        let kind = if s.blue_number.is_some() {
            "red"
        } else {
            "blue"
        };
        self.writes.invoices.push(serde_json::json!([
            s.number,
            s.enterprise,
            s.order_id,
            kind,
            s.blue_number,
            s.form_number,
            s.issued_at,
            s.total.to_string(),
            s.record,
            s.request_hash,
            s.catalog_version,
        ]));
        let (month, used) = s.quota;
        let key = (s.enterprise.to_owned(), month);
        self.known.quotas.insert(key.clone(), used);
        self.writes.quotas.insert(key);
    }

    /// Writes what was kept, the blocks held by `instance` for another lease, then commits
    /// (with the audit records).
    pub(crate) async fn commit(mut self, instance: &str) -> Result<(), StoreError> {
        let w = std::mem::take(&mut self.writes);
        let blocks = &self.known.blocks;
        if !(w.invoices.is_empty() && blocks.is_empty() && w.quotas.is_empty()) {
            let blocks: Vec<serde_json::Value> = blocks
                .values()
                .map(|(id, block)| Ok(serde_json::json!([id, sequence(block)?])))
                .collect::<Result<_, StoreError>>()?;
            let quotas: Vec<serde_json::Value> = w
                .quotas
                .into_iter()
                .filter_map(|key| {
                    let used = self.known.quotas.get(&key)?.to_string();
                    Some(serde_json::json!([key.0, key.1, used]))
                })
                .collect();
            query(WRITE_ISSUED)
                .bind(serde_json::Value::Array(w.invoices).to_string())
                .bind(serde_json::Value::Array(blocks).to_string())
                .bind(serde_json::Value::Array(quotas).to_string())
                .bind(now().unix_timestamp())
                .bind(instance)
                .bind(now().unix_timestamp() + BLOCK_LEASE)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await
    }
}
