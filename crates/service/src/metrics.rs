//! A small Prometheus registry: counters and histograms with labels, rendered in the text
//! exposition format (version 0.0.4). One registry per role, so that roles running in one
//! process (`fapiao up`) still expose their own figures on their own admin port.
//!
//! Gauges that describe stored state (outbox depth, quota usage) are not kept here: the role
//! computes them when scraped and passes them to [`Registry::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Family<T> {
    help: &'static str,
    series: BTreeMap<Labels, T>,
}

/// A gauge value computed at scrape time.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Labels.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// Counters and histograms of one role.
#[derive(Debug, Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<&'static str, Family<u64>>>,
    histograms: Mutex<BTreeMap<&'static str, Family<Histogram>>>,
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to a counter.
    pub fn add(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        n: u64,
    ) {
        if let Ok(mut c) = self.counters.lock() {
            let f = c.entry(name).or_insert_with(|| Family {
                help,
                series: BTreeMap::new(),
            });
            *f.series.entry(own(labels)).or_default() += n;
        }
    }

    /// Counts one event.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, help, labels, 1);
    }

    /// Records a duration.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: Duration,
    ) {
        let secs = value.as_secs_f64();
        if let Ok(mut h) = self.histograms.lock() {
            let f = h.entry(name).or_insert_with(|| Family {
                help,
                series: BTreeMap::new(),
            });
            let s = f.series.entry(own(labels)).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    s.counts[i] += 1;
                }
            }
            s.count += 1;
            s.sum += secs;
        }
    }

    /// The value of a counter series (0 when absent), for tests and readiness.
    #[must_use]
    pub fn counter(&self, name: &str, labels: &[(&'static str, &str)]) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| {
                c.get(name)
                    .and_then(|f| f.series.get(&own(labels)).copied())
            })
            .unwrap_or(0)
    }

    /// The text exposition of everything, plus `gauges`.
    #[must_use]
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        if let Ok(c) = self.counters.lock() {
            for (name, f) in c.iter() {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", f.help);
                for (labels, v) in &f.series {
                    let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
                }
            }
        }
        if let Ok(h) = self.histograms.lock() {
            for (name, f) in h.iter() {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", f.help);
                for (labels, s) in &f.series {
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            label_text(labels, Some(("le", bound.to_string()))),
                            s.counts[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        label_text(labels, Some(("le", "+Inf".into()))),
                        s.count
                    );
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), s.sum);
                    let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), s.count);
                }
            }
        }
        let mut last = "";
        for g in gauges {
            if g.name != last {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
                last = g.name;
            }
            let labels: Labels = g.labels.clone();
            let _ = writeln!(out, "{}{} {}", g.name, label_text(&labels, None), g.value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges_in_the_text_format() {
        let r = Registry::new();
        r.inc("fapiao_x_total", "Things.", &[("kind", "blue")]);
        r.add("fapiao_x_total", "Things.", &[("kind", "blue")], 2);
        r.observe(
            "fapiao_d_seconds",
            "Durations.",
            &[("route", "/v1/a\"b")],
            Duration::from_millis(3),
        );
        let text = r.render(&[Gauge {
            name: "fapiao_g",
            help: "A gauge.",
            labels: vec![("e", "x".into())],
            value: 1.5,
        }]);
        assert!(
            text.contains("# TYPE fapiao_x_total counter\nfapiao_x_total{kind=\"blue\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("fapiao_d_seconds_bucket{route=\"/v1/a\\\"b\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fapiao_d_seconds_bucket{route=\"/v1/a\\\"b\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fapiao_d_seconds_count{route=\"/v1/a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fapiao_g gauge\nfapiao_g{e=\"x\"} 1.5\n"),
            "{text}"
        );
        assert_eq!(r.counter("fapiao_x_total", &[("kind", "blue")]), 3);
    }
}
