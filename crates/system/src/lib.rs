//! Running Fapiao.
//!
//! - [`bootstrap`]: the development data directory — a CA per suite, certificates for every
//!   role and for the demo enterprises' hosted devices, CRLs, key passphrase, role configs.
//! - [`config`]: a role's configuration file (`fapiao serve <role> --config <file>`), with
//!   `FAPIAO_…` environment overrides.
//! - [`run`]: starting roles from configs, in one process or one per process.
//! - [`erp`]: the ERP client (signed requests to the cloud's API), used by `fapiao issue`,
//!   `fapiao red` and the tests.

pub mod bootstrap;
pub mod config;
pub mod erp;
pub mod run;

pub use bootstrap::{AGENT_ENTERPRISE, DemoEnterprise, Layout, Ports, Storage};
pub use config::RoleConfig;
pub use erp::ErpClient;
pub use run::{Running, System};

/// What expires in `role`'s database and when (see [`fapiao_store::retention`]); `None` for an
/// unknown role.
#[must_use]
pub fn retention_rules(role: &str) -> Option<&'static [fapiao_store::retention::Rule]> {
    use fapiao_store::retention::{Age, Class, Rule};
    const fn rule(
        class: Class,
        table: &'static str,
        column: &'static str,
        age: Age,
        filter: &'static str,
    ) -> Rule {
        // Logs are keyed by `id`, invoices and void numbers by `number`.
        let key = match class {
            Class::Logs => "id",
            Class::Invoices => "number",
        };
        Rule {
            class,
            table,
            key,
            column,
            age,
            filter,
        }
    }
    const CLOUD: &[Rule] = &[
        rule(
            Class::Logs,
            "webhooks",
            "created_at",
            Age::Unix,
            "state = 'done'",
        ),
        rule(Class::Invoices, "invoices", "issued_at", Age::ChinaText, ""),
    ];
    const PLATFORM: &[Rule] = &[
        rule(
            Class::Logs,
            "outbox",
            "done_at",
            Age::Unix,
            "state = 'done'",
        ),
        rule(Class::Invoices, "invoices", "issued_at", Age::ChinaText, ""),
        rule(Class::Invoices, "void_numbers", "at", Age::Unix, ""),
    ];
    const TAX: &[Rule] = &[
        rule(Class::Logs, "upload_log", "at", Age::Unix, ""),
        rule(Class::Invoices, "invoices", "accepted_at", Age::Unix, ""),
    ];
    const AGENT: &[Rule] = &[
        rule(Class::Logs, "queue", "done_at", Age::Unix, "state = 'done'"),
        rule(Class::Invoices, "invoices", "issued_at", Age::ChinaText, ""),
    ];
    match role {
        "agent" => Some(AGENT),
        "cloud" => Some(CLOUD),
        "platform" => Some(PLATFORM),
        "tax" => Some(TAX),
        _ => None,
    }
}

/// The columns of `role`'s database whose values are sealed at rest (what a key rotation
/// re-seals); `None` for an unknown role.
#[must_use]
pub fn sealed_columns(role: &str) -> Option<&'static [fapiao_store::vault::SealedColumn]> {
    match role {
        "cloud" => Some(fapiao_cloud::SEALED),
        "platform" => Some(fapiao_platform::SEALED),
        "tax" => Some(fapiao_tax::SEALED),
        "agent" => Some(fapiao_agent::SEALED),
        _ => None,
    }
}

/// The schema migrations of `role`'s database; `None` for an unknown role.
#[must_use]
pub fn migrations(role: &str) -> Option<&'static [fapiao_store::Migration]> {
    match role {
        "cloud" => Some(fapiao_cloud::MIGRATIONS),
        "platform" => Some(fapiao_platform::MIGRATIONS),
        "tax" => Some(fapiao_tax::MIGRATIONS),
        "agent" => Some(fapiao_agent::MIGRATIONS),
        _ => None,
    }
}

/// Errors of this crate, with what failed in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SystemError(pub String);

impl SystemError {
    pub(crate) fn new(what: impl std::fmt::Display) -> Self {
        Self(what.to_string())
    }
}

/// `Result` with [`SystemError`].
pub type Result<T, E = SystemError> = std::result::Result<T, E>;
