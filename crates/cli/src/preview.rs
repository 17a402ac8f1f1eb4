//! `fapiao preview`: order file → validated, computed invoice draft on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fapiao_model::{Invoice, InvoiceNumber, Order, TaxCatalog, datetime};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::PreviewArgs;
use crate::text::render_draft;

/// What `preview` will do, decided from the raw arguments before any work starts.
pub(crate) struct Plan {
    order: PathBuf,
    catalog: Option<PathBuf>,
    json: bool,
    numbered: Option<(InvoiceNumber, PrimitiveDateTime)>,
}

impl Plan {
    pub(crate) fn from_args(args: PreviewArgs, now: OffsetDateTime) -> anyhow::Result<Self> {
        let numbered = match (args.number, args.issued_at) {
            (None, None) => None,
            (None, Some(_)) => anyhow::bail!("--issued-at needs --number"),
            (Some(n), at) => {
                let number = InvoiceNumber::parse(&n).with_context(|| format!("--number {n}"))?;
                let at = match at {
                    Some(t) => datetime::parse(&t)
                        .with_context(|| format!("--issued-at {t}: use yyyy-MM-dd HH:mm:ss"))?,
                    None => {
                        let china = now.to_offset(UtcOffset::from_hms(8, 0, 0)?);
                        PrimitiveDateTime::new(china.date(), china.time()).replace_nanosecond(0)?
                    }
                };
                number
                    .check_issue_year(at.date())
                    .with_context(|| format!("--number {n}"))?;
                Some((number, at))
            }
        };
        Ok(Self {
            order: args.order,
            catalog: args.catalog,
            json: args.json,
            numbered,
        })
    }
}

pub(crate) fn run(plan: &Plan) -> anyhow::Result<ExitCode> {
    let catalog = match &plan.catalog {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading catalog {}", path.display()))?;
            TaxCatalog::parse_csv(&text).with_context(|| format!("catalog {}", path.display()))?
        }
        None => TaxCatalog::builtin(),
    };
    let json = std::fs::read_to_string(&plan.order)
        .with_context(|| format!("reading order {}", plan.order.display()))?;
    let outcome = Order::from_json(&json).and_then(|order| order.validate(&catalog));
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(draft) => {
            match (&plan.numbered, plan.json) {
                (Some((number, at)), true) => {
                    let invoice = Invoice::issue(draft, number.clone(), *at)?;
                    serde_json::to_writer_pretty(&mut out, &invoice)?;
                    writeln!(out)?;
                }
                (None, true) => {
                    serde_json::to_writer_pretty(&mut out, &draft)?;
                    writeln!(out)?;
                }
                (numbered, false) => {
                    let numbered = numbered.as_ref().map(|(n, at)| (n, *at));
                    out.write_all(render_draft(&draft, numbered).as_bytes())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if plan.json {
                serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "findings": errors }))?;
                writeln!(out)?;
            } else {
                eprintln!(
                    "{}: the order is not valid ({} finding(s)):",
                    plan.order.display(),
                    errors.findings().len()
                );
                for f in errors.findings() {
                    eprintln!("  {f}");
                }
            }
            Ok(ExitCode::from(2))
        }
    }
}
