//! The bench report as text.

use super::*;

/// The report as text.
pub(super) fn render(r: &BenchReport, opts: &BenchOptions) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let c = &r.closed;
    let store = match &r.postgres {
        Some(pg) => format!("every role on {pg}"),
        None => "durable SQLite".to_owned(),
    };
    let processes = if opts.replicas > 1 {
        format!(
            "cloud and platform as {} processes each behind nginx, tax in this process",
            opts.replicas
        )
    } else {
        "all roles in this process".to_owned()
    };
    let _ = writeln!(
        s,
        "Fapiao bench — {} mode, suite {}, {} cores, {}, {processes} (mutual TLS, envelopes, {store})\n",
        if opts.enterprise_hosted {
            "async (enterprise-hosted: cloud queue, agent, reports through platform)"
        } else {
            "sync"
        },
        r.suite,
        r.cores,
        if r.batch > 1 {
            format!(
                "{} orders per ERP request (POST /v1/invoices/batch)",
                r.batch
            )
        } else {
            "one order per ERP request".to_owned()
        }
    );
    let _ = writeln!(
        s,
        "closed loop      {:>8.1} invoices/s   ({} invoices from {} clients, all accepted by tax in {:.2} s, {} errors)",
        c.per_second, c.invoices, opts.concurrency, c.seconds, c.errors
    );
    let _ = writeln!(
        s,
        "                 {:>8.1} invoices/s answered to the ERP (uploads to tax still behind)",
        c.answered_per_second
    );
    let _ = writeln!(
        s,
        "                 latency p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        c.latency.p50, c.latency.p95, c.latency.p99, c.latency.max
    );
    let _ = writeln!(
        s,
        "CPU per invoice  {:>8.2} ms           (process user + system, issuing to tax acceptance)",
        c.cpu_ms_per_invoice
    );
    let _ = writeln!(
        s,
        "                 {:>8.2} ms           (the whole machine{}; the ratio below uses {})",
        c.machine_cpu_ms_per_invoice,
        if r.postgres.is_some() {
            ", PostgreSQL's server included"
        } else {
            ""
        },
        if r.postgres.is_some() {
            "this"
        } else {
            "the process's"
        }
    );
    for b in &r.crypto_bound {
        let _ = writeln!(
            s,
            "crypto bound     {:>8.2} ms {:<5}     (one thread; ceiling {:.0} invoices/s on {} cores)",
            b.ms_per_invoice, b.suite, b.ceiling_per_second, r.cores
        );
    }
    if let Some(b) = r.crypto_bound.first() {
        let per = |share: f64| if share > 0.0 { 1.0 / share } else { 0.0 };
        let x = &b.exchanges;
        let _ = if x.flow == Flow::Async {
            writeln!(
                s,
                "                 (invoices per exchange, as the closed loop batched them: pull {:.1}, upload {:.1}, report {:.1}, notice {:.1}, ack {:.1})",
                per(x.pull),
                per(x.upload),
                per(x.report),
                per(x.notice),
                per(x.ack)
            )
        } else {
            writeln!(
                s,
                "                 (invoices per exchange, as the closed loop batched them: order {:.1}, upload {:.1}, notice {:.1})",
                per(x.order),
                per(x.upload),
                per(x.notice)
            )
        };
    }
    let _ = writeln!(
        s,
        "pipeline / crypto bound  {:.2}×  (target ≤ {}×)\n",
        r.ratio_to_crypto_bound,
        if r.postgres.is_some() { "2.5" } else { "2" }
    );
    if opts.enterprise_hosted {
        let _ = writeln!(
            s,
            "open loop        not measured in async mode (the ERP's answer is the queueing; the closed\n                 loop above runs until cloud has every invoice accepted by tax)"
        );
    } else {
        let _ = writeln!(
            s,
            "open loop (latency from the scheduled send time)\n  {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "rate", "achieved", "p50", "p95", "p99", "max", "errors"
        );
    }
    for o in &r.open {
        let _ = writeln!(
            s,
            "  {:>8.0}/s {:>8.0}/s {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>7}",
            o.target_per_second,
            o.achieved_per_second,
            o.latency.p50,
            o.latency.p95,
            o.latency.p99,
            o.latency.max,
            o.errors
        );
        if let Some((error, n)) = &o.commonest_error {
            let _ = writeln!(s, "  {:>10} {n} × {error}", "");
        }
        if o.rss_kib.len() > 1 {
            let steps: Vec<String> = o
                .rss_kib
                .iter()
                .map(|k| format!("{:.1}", kib_to_mib(*k)))
                .collect();
            let _ = writeln!(
                s,
                "  {:>10} RSS each minute and at the end: {} MiB",
                "",
                steps.join(" → ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nstages (closed loop; wall time per invoice, all roles)\n  {:<16} {:>8} {:>10}",
        "span", "count", "time"
    );
    // A span of the other flow never opens.
    for st in r.stages.iter().filter(|st| st.per_invoice > 0.0) {
        let _ = writeln!(
            s,
            "  {:<16} {:>8.1} {:>7.2} ms",
            st.name, st.per_invoice, st.ms_per_invoice
        );
    }
    let [start, end, peak] = r.rss_kib;
    let _ = writeln!(
        s,
        "\nmemory           RSS {:.1} MiB at start, {:.1} MiB at the end, peak {:.1} MiB",
        kib_to_mib(start),
        kib_to_mib(end),
        kib_to_mib(peak)
    );
    s
}

#[expect(clippy::cast_precision_loss, reason = "memory sizes far below 2^52")]
fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}
