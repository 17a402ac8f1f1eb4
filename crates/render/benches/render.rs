//! Render time per invoice (font loaded once) and file sizes: `cargo bench -p fapiao-render`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fapiao_model::{Invoice, InvoiceNumber, Order, TaxCatalog};
use fapiao_render::{bundled_font, render_ofd, render_pdf, render_xml};
use time::macros::datetime;

fn invoice(path: &str) -> Invoice {
    let json = std::fs::read_to_string(format!(
        "{}/../../examples/orders/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example");
    let draft = Order::from_json(&json)
        .expect("json")
        .validate(&TaxCatalog::builtin())
        .expect("valid");
    Invoice::issue(
        draft,
        InvoiceNumber::parse("26312000000000000101").expect("number"),
        datetime!(2026-11-20 10:15:30),
    )
    .expect("issue")
}

fn bench(c: &mut Criterion) {
    let font = bundled_font().expect("font");
    for name in ["basic", "special"] {
        let inv = invoice(&format!("{name}.json"));
        let xml = render_xml(&inv, None);
        let pdf = render_pdf(&inv, &xml, &font).expect("pdf");
        // The OFD as a download is: rendered, and packed with a signature value (72 bytes of
        // DER; signing itself is the device's and measured with the crypto bound).
        let ofd = render_ofd(&inv, &xml, &font)
            .expect("ofd")
            .sign(&[0x30; 72]);
        eprintln!(
            "{name}: XML {} bytes, PDF {} bytes, OFD {} bytes",
            xml.len(),
            pdf.len(),
            ofd.len()
        );
        c.bench_function(&format!("xml/{name}"), |b| {
            b.iter(|| render_xml(black_box(&inv), None))
        });
        c.bench_function(&format!("pdf/{name}"), |b| {
            b.iter(|| render_pdf(black_box(&inv), &xml, &font).expect("pdf"))
        });
        c.bench_function(&format!("ofd/{name}"), |b| {
            b.iter(|| {
                render_ofd(black_box(&inv), &xml, &font)
                    .expect("ofd")
                    .sign(&[0x30; 72])
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
