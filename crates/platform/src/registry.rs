//! Registries of connected clouds and enterprises, and the admin API over them (separate
//! admin port, mutual TLS with an operator certificate of role `platform`).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/admin/clouds` | list clouds |
//! | POST | `/admin/clouds` | register a cloud `{identity, url}` (upsert) |
//! | GET | `/admin/enterprises` | list enterprises |
//! | POST | `/admin/enterprises` | register an enterprise (409 if it exists) |
//! | PATCH | `/admin/enterprises/{taxpayer_id}` | change status, limits, types, hosting |
//! | GET | `/admin/outbox?state=pending\|failed\|done` | outbox entries |
//! | POST | `/admin/outbox/{id}/retry` | retry a failed entry now |
//! | GET | `/admin/invoices/{number}` | one invoice with its tax status |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fapiao_crypto::Role;
use fapiao_model::{Amount, TaxpayerId};
use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_service::error::request_id;
use fapiao_service::{ApiError, PeerIdentity};
use fapiao_store::{Row, Sql, StoreError, Tx, query, query_scalar};
use serde::{Deserialize, Serialize};

use crate::Platform;
use crate::step::{Step, refused};

/// A connected cloud platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    /// `cloud:<name>`, as its certificates name it.
    pub identity: String,
    /// Base URL of its role endpoint (status notices go there).
    pub url: String,
}

/// Whether an enterprise may issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnterpriseStatus {
    /// May issue.
    Active,
    /// May not issue.
    Suspended,
}

/// Where an enterprise's issuing device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hosting {
    /// On the platform (sync flow).
    Platform,
    /// On the enterprise's premises (async flow, its agent).
    Enterprise,
}

/// A registered enterprise and its qualification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enterprise {
    /// Unified social credit code.
    pub taxpayer_id: String,
    /// Registered name.
    pub name: String,
    /// Owning cloud (`cloud:<name>`).
    pub cloud: String,
    /// Active or suspended.
    pub status: EnterpriseStatus,
    /// Hosting mode.
    pub hosting: Hosting,
    /// Allowed invoice types: `special`, `ordinary`.
    pub allowed_types: Vec<String>,
    /// Largest 价税合计 of one invoice.
    pub invoice_limit: Amount,
    /// Credit quota per calendar month (sum of 价税合计, reds subtracting).
    pub monthly_quota: Amount,
    /// Province code of its invoice numbers (default: from the credit code's division code).
    #[serde(default)]
    pub province: Option<u8>,
    /// Registered address, phone, bank and account (`"seller": {…}`): what its invoices carry
    /// as the seller's (an order stating other values is refused; one leaving them out gets
    /// these).
    #[serde(
        default,
        rename = "seller",
        skip_serializing_if = "SellerDetails::is_empty"
    )]
    pub details: SellerDetails,
}

/// The seller's particulars an enterprise may register (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerDetails {
    /// 地址.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// 电话.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// 开户银行.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_name: Option<String>,
    /// 银行账号.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_account: Option<String>,
}

impl SellerDetails {
    /// Whether nothing is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// Each registered particular with its order field path.
    #[must_use]
    pub fn fields(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("seller.address", self.address.as_deref()),
            ("seller.phone", self.phone.as_deref()),
            ("seller.bank_name", self.bank_name.as_deref()),
            ("seller.bank_account", self.bank_account.as_deref()),
        ]
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        for ((field, value), max) in self.fields().into_iter().zip([100, 30, 100, 50]) {
            if let Some(v) = value
                && (v.trim() != v
                    || v.is_empty()
                    || v.chars().count() > max
                    || v.chars().any(char::is_control))
            {
                let field = field.strip_prefix("seller.").unwrap_or(field);
                return Err((
                    field,
                    format!("1 to {max} characters, no control characters or spaces around"),
                ));
            }
        }
        Ok(())
    }
}

/// A change to an enterprise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterprisePatch {
    /// New status.
    #[serde(default)]
    pub status: Option<EnterpriseStatus>,
    /// New hosting mode.
    #[serde(default)]
    pub hosting: Option<Hosting>,
    /// New allowed types.
    #[serde(default)]
    pub allowed_types: Option<Vec<String>>,
    /// New per-invoice limit.
    #[serde(default)]
    pub invoice_limit: Option<Amount>,
    /// New monthly quota.
    #[serde(default)]
    pub monthly_quota: Option<Amount>,
    /// New seller particulars: each one given replaces the registered one (`""` removes it).
    #[serde(default)]
    pub seller: Option<SellerDetails>,
}

impl Enterprise {
    /// Checks the fields; returns the first problem with its field name.
    ///
    /// # Errors
    /// `(field, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        TaxpayerId::parse(&self.taxpayer_id).map_err(|e| ("taxpayer_id", e.to_string()))?;
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            return Err(("name", "1 to 100 characters".into()));
        }
        if !self.cloud.starts_with("cloud:") {
            return Err(("cloud", "a cloud identity `cloud:<name>`".into()));
        }
        check_types(&self.allowed_types)?;
        check_money("invoice_limit", self.invoice_limit)?;
        check_money("monthly_quota", self.monthly_quota)?;
        if let Some(p) = self.province
            && fapiao_model::ProvinceCode::parse(&format!("{p:02}")).is_err()
        {
            return Err(("province", format!("{p:02} is not a province code")));
        }
        self.details.check()
    }

    /// The province code of its numbers.
    #[must_use]
    pub fn province_code(&self) -> u8 {
        self.province.unwrap_or_else(|| {
            self.taxpayer_id
                .get(2..4)
                .and_then(|p| p.parse().ok())
                .filter(|p| fapiao_model::ProvinceCode::parse(&format!("{p:02}")).is_ok())
                .unwrap_or(11)
        })
    }
}

fn check_types(types: &[String]) -> Result<(), (&'static str, String)> {
    if types.is_empty() || types.iter().any(|t| t != "special" && t != "ordinary") {
        return Err((
            "allowed_types",
            "one or both of `special`, `ordinary`".into(),
        ));
    }
    Ok(())
}

fn check_money(field: &'static str, a: Amount) -> Result<(), (&'static str, String)> {
    if a.is_negative() || !a.in_range() {
        return Err((field, "a non-negative amount".into()));
    }
    Ok(())
}

fn status_text(s: EnterpriseStatus) -> &'static str {
    match s {
        EnterpriseStatus::Active => "active",
        EnterpriseStatus::Suspended => "suspended",
    }
}

fn hosting_text(h: Hosting) -> &'static str {
    match h {
        Hosting::Platform => "platform",
        Hosting::Enterprise => "enterprise",
    }
}

/// The registered enterprise, or `enterprise_unknown`.
pub(crate) async fn registered(tx: &mut Tx, enterprise: &str) -> Result<Enterprise, Step> {
    let row = query("SELECT * FROM enterprises WHERE taxpayer_id = $1")
        .bind(enterprise)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Err(unknown_enterprise(enterprise));
    };
    Ok(enterprise_from_row(&row)?)
}

/// `enterprise_unknown`: no enterprise of that taxpayer id is registered.
pub(crate) fn unknown_enterprise(enterprise: &str) -> Step {
    refused(
        Code::EnterpriseUnknown,
        format!("enterprise {enterprise} is not registered"),
    )
}

/// Locks the rows of `enterprises` until the transaction ends (PostgreSQL; on SQLite the
/// write transaction holds the database already), in one order whatever the caller's, so
/// two transactions locking overlapping sets never deadlock. What a transaction checks of an
/// enterprise and then writes — an order's idempotency, the month's quota, what remains of a
/// blue invoice, its blocks — holds while it runs: a replica issuing for the same enterprise
/// waits, then reads what this one wrote.
///
/// # Errors
/// [`StoreError`].
pub(crate) async fn lock_enterprises(tx: &mut Tx, enterprises: &[&str]) -> Result<(), StoreError> {
    if enterprises.is_empty() || tx.engine() == fapiao_store::Engine::Sqlite {
        return Ok(());
    }
    let mut ids: Vec<&str> = enterprises.to_vec();
    ids.sort_unstable();
    ids.dedup();
    query(Sql::postgres_only(
        "SELECT taxpayer_id FROM enterprises
         WHERE taxpayer_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
         ORDER BY taxpayer_id FOR UPDATE",
    ))
    .bind(serde_json::json!(ids).to_string())
    .fetch_all(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) fn enterprise_from_row(r: &Row) -> Result<Enterprise, StoreError> {
    let bad = |c: &str| StoreError::Data(format!("enterprises.{c}"));
    let status: String = r.try_get("status")?;
    let hosting: String = r.try_get("hosting")?;
    let types: String = r.try_get("allowed_types")?;
    let limit: String = r.try_get("invoice_limit")?;
    let quota: String = r.try_get("monthly_quota")?;
    let province: i64 = r.try_get("province")?;
    Ok(Enterprise {
        taxpayer_id: r.try_get("taxpayer_id")?,
        name: r.try_get("name")?,
        cloud: r.try_get("cloud")?,
        status: match status.as_str() {
            "active" => EnterpriseStatus::Active,
            "suspended" => EnterpriseStatus::Suspended,
            _ => return Err(bad("status")),
        },
        hosting: match hosting.as_str() {
            "platform" => Hosting::Platform,
            "enterprise" => Hosting::Enterprise,
            _ => return Err(bad("hosting")),
        },
        allowed_types: types.split(',').map(str::to_owned).collect(),
        invoice_limit: Amount::parse(&limit).map_err(|_| bad("invoice_limit"))?,
        monthly_quota: Amount::parse(&quota).map_err(|_| bad("monthly_quota"))?,
        province: u8::try_from(province).ok(),
        details: SellerDetails {
            address: r.try_get("address")?,
            phone: r.try_get("phone")?,
            bank_name: r.try_get("bank_name")?,
            bank_account: r.try_get("bank_account")?,
        },
    })
}

impl Platform {
    /// Registers (or updates the URL of) a cloud.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn register_cloud(&self, actor: &str, cloud: &Cloud) -> Result<(), StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        query(
            "INSERT INTO clouds (identity, url, registered_at) VALUES ($1, $2, $3)
             ON CONFLICT (identity) DO UPDATE SET url = excluded.url",
        )
        .bind(&cloud.identity)
        .bind(&cloud.url)
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?;
        crate::step::audit(
            &mut tx,
            actor,
            "cloud.registered",
            &cloud.identity,
            &serde_json::json!({"url": cloud.url}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every cloud.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn clouds(&self) -> Result<Vec<Cloud>, StoreError> {
        let rows = query("SELECT identity, url FROM clouds ORDER BY identity")
            .fetch_all(self.inner.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Cloud {
                    identity: r.try_get("identity")?,
                    url: r.try_get("url")?,
                })
            })
            .collect::<Result<_, StoreError>>()
    }

    /// Registers an enterprise; `Ok(false)` if it already exists (nothing changed).
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn register_enterprise(
        &self,
        actor: &str,
        e: &Enterprise,
    ) -> Result<bool, RegistryError> {
        e.check()
            .map_err(|(field, message)| RegistryError::Invalid { field, message })?;
        let mut tx = self.inner.db.begin_write().await?;
        let cloud: Option<String> = query_scalar("SELECT identity FROM clouds WHERE identity = $1")
            .bind(&e.cloud)
            .fetch_optional(&mut *tx)
            .await?;
        if cloud.is_none() {
            return Err(RegistryError::Invalid {
                field: "cloud",
                message: format!("cloud `{}` is not registered", e.cloud),
            });
        }
        let inserted = query(
            "INSERT INTO enterprises (taxpayer_id, name, cloud, status, hosting, allowed_types,
                invoice_limit, monthly_quota, province, updated_at, address, phone, bank_name,
                bank_account)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (taxpayer_id) DO NOTHING",
        )
        .bind(&e.taxpayer_id)
        .bind(&e.name)
        .bind(&e.cloud)
        .bind(status_text(e.status))
        .bind(hosting_text(e.hosting))
        .bind(e.allowed_types.join(","))
        .bind(e.invoice_limit.to_string())
        .bind(e.monthly_quota.to_string())
        .bind(i64::from(e.province_code()))
        .bind(now().unix_timestamp())
        .bind(&e.details.address)
        .bind(&e.details.phone)
        .bind(&e.details.bank_name)
        .bind(&e.details.bank_account)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            crate::step::audit(
                &mut tx,
                actor,
                "enterprise.registered",
                &e.taxpayer_id,
                &serde_json::to_value(e).unwrap_or_default(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Applies a change to an enterprise; returns it as changed, `None` if unknown.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn update_enterprise(
        &self,
        actor: &str,
        taxpayer_id: &str,
        patch: &EnterprisePatch,
    ) -> Result<Option<Enterprise>, RegistryError> {
        let mut tx = self.inner.db.begin_write().await?;
        let row = query("SELECT * FROM enterprises WHERE taxpayer_id = $1")
            .bind(taxpayer_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut e = enterprise_from_row(&row)?;
        if let Some(s) = patch.status {
            e.status = s;
        }
        if let Some(h) = patch.hosting {
            e.hosting = h;
        }
        if let Some(t) = &patch.allowed_types {
            e.allowed_types.clone_from(t);
        }
        if let Some(l) = patch.invoice_limit {
            e.invoice_limit = l;
        }
        if let Some(q) = patch.monthly_quota {
            e.monthly_quota = q;
        }
        if let Some(new) = &patch.seller {
            let d = &mut e.details;
            for (target, given) in [
                (&mut d.address, &new.address),
                (&mut d.phone, &new.phone),
                (&mut d.bank_name, &new.bank_name),
                (&mut d.bank_account, &new.bank_account),
            ] {
                if let Some(v) = given {
                    *target = Some(v.clone()).filter(|v| !v.is_empty());
                }
            }
        }
        e.check()
            .map_err(|(field, message)| RegistryError::Invalid { field, message })?;
        query(
            "UPDATE enterprises SET status = $2, hosting = $3, allowed_types = $4,
                invoice_limit = $5, monthly_quota = $6, updated_at = $7, address = $8,
                phone = $9, bank_name = $10, bank_account = $11
             WHERE taxpayer_id = $1",
        )
        .bind(taxpayer_id)
        .bind(status_text(e.status))
        .bind(hosting_text(e.hosting))
        .bind(e.allowed_types.join(","))
        .bind(e.invoice_limit.to_string())
        .bind(e.monthly_quota.to_string())
        .bind(now().unix_timestamp())
        .bind(&e.details.address)
        .bind(&e.details.phone)
        .bind(&e.details.bank_name)
        .bind(&e.details.bank_account)
        .execute(&mut *tx)
        .await?;
        crate::step::audit(
            &mut tx,
            actor,
            "enterprise.changed",
            taxpayer_id,
            &serde_json::to_value(patch).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Every enterprise.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn enterprises(&self) -> Result<Vec<Enterprise>, StoreError> {
        let rows = query("SELECT * FROM enterprises ORDER BY taxpayer_id")
            .fetch_all(self.inner.db.pool())
            .await?;
        rows.iter()
            .map(enterprise_from_row)
            .collect::<Result<_, _>>()
    }

    /// The admin routes (separate admin port; mutual TLS; operators change, auditors read).
    pub fn admin_router(&self) -> Router {
        let ops = fapiao_service::ops::admin_routes(
            "platform",
            Arc::new(self.clone()),
            self.inner.registry.clone(),
        );
        let router = Router::new()
            .route("/admin/clouds", get(list_clouds).post(add_cloud))
            .route(
                "/admin/enterprises",
                get(list_enterprises).post(add_enterprise),
            )
            .route(
                "/admin/enterprises/{taxpayer_id}",
                axum::routing::patch(patch_enterprise),
            )
            .route("/admin/outbox", get(list_outbox))
            .route("/admin/outbox/{id}/retry", post(retry_outbox))
            .route("/admin/invoices/{number}", get(get_invoice))
            .with_state(self.clone())
            .merge(ops);
        fapiao_service::ops::track(router, self.inner.registry.clone())
    }
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Problem.
        message: String,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The refusal for a peer the admin port should not have let through (it checks first:
/// `fapiao_service::ops::require_admin`): a change needs an operator, a read an operator or
/// an auditor.
fn not_allowed(peer: &PeerIdentity, rid: &str, change: bool) -> Option<Response> {
    let allowed = match peer.role {
        Role::Operator => true,
        Role::Auditor => !change,
        _ => false,
    };
    (!allowed).then(|| {
        ApiError::new(
            Code::Forbidden,
            format!("{} may not use this admin route", peer.identity()),
            rid,
        )
        .into_response()
    })
}

fn internal(rid: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(request_id = %rid, error = %e, "admin request failed");
    ApiError::new(Code::Internal, "internal error", rid).into_response()
}

fn registry_error(rid: &str, e: &RegistryError) -> Response {
    match e {
        RegistryError::Invalid { field, message } => {
            ApiError::new(Code::InvalidRequest, format!("{field}: {message}"), rid).into_response()
        }
        RegistryError::Store(s) => internal(rid, s),
    }
}

async fn list_clouds(State(p): State<Platform>, peer: PeerIdentity, h: HeaderMap) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, false) {
        return r;
    }
    match p.clouds().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => internal(&rid, &e),
    }
}

async fn add_cloud(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, true) {
        return r;
    }
    let cloud: Cloud = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return ApiError::new(Code::InvalidRequest, e.to_string(), rid).into_response(),
    };
    if !cloud.identity.starts_with("cloud:") || !cloud.url.starts_with("https://") {
        return ApiError::new(
            Code::InvalidRequest,
            "identity must be `cloud:<name>` and url https://…",
            rid,
        )
        .into_response();
    }
    tracing::info!(request_id = %rid, operator = %peer.identity(), cloud = %cloud.identity, "cloud registered");
    match p.register_cloud(&peer.identity(), &cloud).await {
        Ok(()) => (StatusCode::CREATED, Json(cloud)).into_response(),
        Err(e) => internal(&rid, &e),
    }
}

async fn list_enterprises(State(p): State<Platform>, peer: PeerIdentity, h: HeaderMap) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, false) {
        return r;
    }
    match p.enterprises().await {
        Ok(e) => Json(e).into_response(),
        Err(e) => internal(&rid, &e),
    }
}

async fn add_enterprise(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, true) {
        return r;
    }
    let e: Enterprise = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return ApiError::new(Code::InvalidRequest, e.to_string(), rid).into_response(),
    };
    match p.register_enterprise(&peer.identity(), &e).await {
        Ok(true) => {
            tracing::info!(request_id = %rid, operator = %peer.identity(), enterprise = %e.taxpayer_id, "enterprise registered");
            (StatusCode::CREATED, Json(e)).into_response()
        }
        Ok(false) => ApiError::new(
            Code::InvalidRequest,
            format!(
                "enterprise {} is already registered; PATCH it",
                e.taxpayer_id
            ),
            rid,
        )
        .into_response(),
        Err(err) => registry_error(&rid, &err),
    }
}

async fn patch_enterprise(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    Path(taxpayer_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, true) {
        return r;
    }
    let patch: EnterprisePatch = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return ApiError::new(Code::InvalidRequest, e.to_string(), rid).into_response(),
    };
    match p
        .update_enterprise(&peer.identity(), &taxpayer_id, &patch)
        .await
    {
        Ok(Some(e)) => {
            tracing::info!(request_id = %rid, operator = %peer.identity(), enterprise = %taxpayer_id, "enterprise changed");
            Json(e).into_response()
        }
        Ok(None) => ApiError::new(Code::NotFound, "no such enterprise", rid).into_response(),
        Err(err) => registry_error(&rid, &err),
    }
}

#[derive(Deserialize)]
struct OutboxQuery {
    state: Option<String>,
}

async fn list_outbox(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    Query(q): Query<OutboxQuery>,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, false) {
        return r;
    }
    let state = q.state.unwrap_or_else(|| "failed".into());
    if !["pending", "failed", "done"].contains(&state.as_str()) {
        return ApiError::new(Code::InvalidRequest, "state: pending, failed or done", rid)
            .into_response();
    }
    match p.outbox(&state).await {
        Ok(e) => Json(e).into_response(),
        Err(e) => internal(&rid, &e),
    }
}

async fn retry_outbox(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, true) {
        return r;
    }
    match p.retry_outbox(&peer.identity(), id).await {
        Ok(true) => {
            tracing::info!(request_id = %rid, operator = %peer.identity(), id, "outbox entry retried");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::new(Code::NotFound, "no failed outbox entry with this id", rid)
            .into_response(),
        Err(e) => internal(&rid, &e),
    }
}

async fn get_invoice(
    State(p): State<Platform>,
    peer: PeerIdentity,
    h: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let rid = request_id(&h);
    if let Some(r) = not_allowed(&peer, &rid, false) {
        return r;
    }
    match p.invoice(&number).await {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => ApiError::new(Code::InvoiceNotFound, "no such invoice", rid).into_response(),
        Err(e) => internal(&rid, &e),
    }
}
