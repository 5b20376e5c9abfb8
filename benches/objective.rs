//! Loss + gradient throughput of the objective (f32) for several hidden sizes, and
//! fused encoding throughput. Run: `cargo bench --bench objective`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use sae::data::store::MemoryRows;
use sae::learn::sae::objective::{Objective, Penalty};
use sae::learn::sae::{Architecture, Decoder};

fn objective(c: &mut Criterion) {
    let m = 16_384;
    let x = Array2::from_shape_fn((m, 192), |(i, j)| ((i * 13 + j * 7) % 101) as f32 / 101.0);
    let rows = MemoryRows {
        data: x.view(),
        chunk: 65_536,
    };
    let pen = Penalty {
        lambda: 1e-5,
        beta: 3.0,
        rho: 0.01,
    };
    let mut g = c.benchmark_group("loss_gradient");
    g.sample_size(10);
    g.throughput(Throughput::Elements(m as u64));
    for h in [25, 100, 400] {
        let arch = Architecture::new(192, &[h], None, Decoder::Sigmoid).unwrap();
        let theta = arch.init(1);
        let obj = Objective::new(&arch, pen, &rows);
        g.bench_with_input(
            BenchmarkId::new("f32", format!("{m}x192x{h}")),
            &h,
            |b, _| b.iter(|| obj.eval::<f32>(&theta).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, objective);
criterion_main!(benches);
