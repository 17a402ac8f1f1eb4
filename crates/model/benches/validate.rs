//! Order parsing and validation per order (`cargo bench -p fapiao-model`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fapiao_model::{Order, TaxCatalog};

fn bench(c: &mut Criterion) {
    let catalog = TaxCatalog::builtin();
    for name in ["basic", "special", "discount"] {
        let json = std::fs::read_to_string(format!(
            "{}/../../examples/orders/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("example order");
        c.bench_function(&format!("parse+validate/{name}"), |b| {
            b.iter(|| {
                Order::from_json(black_box(&json))
                    .expect("json")
                    .validate(&catalog)
                    .expect("valid")
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);
