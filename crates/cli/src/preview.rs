//! `fapiao preview`: order file → validated, computed invoice draft on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fapiao_model::{Order, TaxCatalog};

use crate::PreviewArgs;
use crate::text::render_draft;

/// What `preview` will do, decided from the raw arguments before any work starts.
pub(crate) struct Plan {
    order: PathBuf,
    catalog: Option<PathBuf>,
    json: bool,
}

impl Plan {
    pub(crate) fn from_args(args: PreviewArgs) -> Self {
        Self {
            order: args.order,
            catalog: args.catalog,
            json: args.json,
        }
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
            if plan.json {
                serde_json::to_writer_pretty(&mut out, &draft)?;
                writeln!(out)?;
            } else {
                out.write_all(render_draft(&draft).as_bytes())?;
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
