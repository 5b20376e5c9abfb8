//! Patch and feature stores: round trips, zero-copy reads, and damaged files.

use std::collections::HashMap;

use ndarray::Array2;
use sae::sae::objective::{Objective, Penalty};
use sae::sae::{Architecture, Decoder};
use sae::store::{write_all, Kind, MemoryRows, Rows, Store, StoreWriter};

use crate::util::tmp;

fn rows(n: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |(i, j)| {
        ((i * 31 + j * 7) % 97) as f32 / 97.0 * 0.8 + 0.1
    })
}

#[test]
fn round_trip_with_partial_last_batch() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(1000, 12);
    let img: Vec<u32> = (0..1000).collect();
    let xs: Vec<u32> = (0..1000).map(|i| i % 7).collect();
    let ys: Vec<u32> = (0..1000).map(|i| i % 5).collect();
    let mut w = StoreWriter::create(&p, Kind::Patches, 12, 300, &HashMap::new()).unwrap();
    w.push_rows(x.view(), &[&img, &xs, &ys]).unwrap();
    assert_eq!(w.finish().unwrap(), 1000);
    let s = Store::open(&p, Kind::Patches).unwrap();
    assert_eq!((s.rows(), s.dim(), s.batches()), (1000, 12, 4));
    let mut at = 0;
    for b in 0..s.batches() {
        let batch = s.batch(b).unwrap();
        let v = batch.values();
        assert_eq!(v, x.slice(ndarray::s![at..at + v.nrows(), ..]));
        assert_eq!(batch.column(1), &xs[at..at + v.nrows()]);
        at += v.nrows();
    }
    assert_eq!(at, 1000);
    assert!(!d.path().join("s.arrow.partial").exists());
}

#[test]
fn streamed_objective_equals_in_memory() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(5000, 12);
    let ids: Vec<u32> = (0..5000).collect();
    let mut w = StoreWriter::create(&p, Kind::Patches, 12, 777, &HashMap::new()).unwrap();
    w.push_rows(x.view(), &[&ids, &ids, &ids]).unwrap();
    w.finish().unwrap();
    let store = Store::open(&p, Kind::Patches).unwrap();
    let mem = MemoryRows {
        data: x.view(),
        chunk: 5000,
    };
    let arch = Architecture::new(12, &[5], None, Decoder::Sigmoid).unwrap();
    let pen = Penalty {
        lambda: 1e-4,
        beta: 3.0,
        rho: 0.05,
    };
    let theta = arch.init(9);
    let (la, ga) = Objective::new(&arch, pen, &store)
        .eval::<f64>(&theta)
        .unwrap();
    let (lb, gb) = Objective::new(&arch, pen, &mem)
        .eval::<f64>(&theta)
        .unwrap();
    assert!((la.total - lb.total).abs() <= 1e-12 * lb.total);
    for (a, b) in ga.iter().zip(&gb) {
        assert!((a - b).abs() <= 1e-10 * (b.abs() + 1e-8));
    }
    assert_eq!(store.rows(), mem.rows());
}

#[test]
fn damaged_or_foreign_stores_are_refused() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(100, 12);
    let ids: Vec<u32> = (0..100).collect();
    write_all(&p, Kind::Features, x.view(), &[&ids, &ids], &HashMap::new()).unwrap();
    let e = Store::open(&p, Kind::Patches).err().unwrap().to_string();
    assert!(
        e.contains("s.arrow") && e.contains("expected patches"),
        "{e}"
    );
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.path().join("cut.arrow");
    std::fs::write(&cut, &bytes[..bytes.len() - 50]).unwrap();
    let e = Store::open(&cut, Kind::Features).err().unwrap().to_string();
    assert!(e.contains("cut.arrow") && e.contains("truncated"), "{e}");
    std::fs::write(&cut, b"hello").unwrap();
    assert!(Store::open(&cut, Kind::Features).is_err());
}

#[test]
fn polars_reads_the_store() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(300, 12);
    let ids: Vec<u32> = (0..300).collect();
    let mut w = StoreWriter::create(&p, Kind::Patches, 12, 128, &HashMap::new()).unwrap();
    w.push_rows(x.view(), &[&ids, &ids, &ids]).unwrap();
    w.finish().unwrap();
    let script = "import sys, polars as pl\n\
                  df = pl.read_ipc(sys.argv[1])\n\
                  print(df.height, df.schema['patch'], df['image'].sum(), '%.6f' % df['patch'][7][3])";
    let out = std::process::Command::new("python3")
        .args(["-c", script, p.to_str().unwrap()])
        .output();
    let required = std::env::var_os("SAE_REQUIRE_POLARS").is_some();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let want = format!(
                "300 Array(Float32, shape=(12,)) {} {:.6}",
                299 * 300 / 2,
                x[[7, 3]]
            );
            assert_eq!(text.trim(), want.trim());
        }
        Ok(o) if !required => eprintln!(
            "skipping: python polars unavailable ({})",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        other => panic!("python polars could not read the store: {other:?}"),
    }
}

#[test]
fn thread_count_does_not_change_the_result() {
    let x = rows(9000, 12);
    let mem = MemoryRows {
        data: x.view(),
        chunk: 4000,
    };
    let arch = Architecture::new(12, &[7], None, Decoder::Linear).unwrap();
    let pen = Penalty {
        lambda: 1e-4,
        beta: 3.0,
        rho: 0.05,
    };
    let theta = arch.init(2);
    let eval = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                Objective::new(&arch, pen, &mem)
                    .eval::<f32>(&theta)
                    .unwrap()
            })
    };
    let (l1, g1) = eval(1);
    for t in [2, 3, 5] {
        let (l, g) = eval(t);
        assert_eq!(l.total, l1.total, "{t} threads");
        assert_eq!(g, g1, "{t} threads");
    }
}

#[test]
fn store_of_another_patch_size_is_refused_by_training() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(50, 108);
    let ids: Vec<u32> = (0..50).collect();
    let mut meta = HashMap::new();
    meta.insert("sae.patch".into(), "6".into());
    meta.insert("sae.channels".into(), "3".into());
    meta.insert("sae.norm".into(), r#"{"kind":"ufldl","pstd":0.3}"#.into());
    write_all(&p, Kind::Patches, x.view(), &[&ids, &ids, &ids], &meta).unwrap();
    let store = Store::open(&p, Kind::Patches).unwrap();
    let arch = Architecture::new(192, &[5], None, Decoder::Sigmoid).unwrap();
    let pen = Penalty {
        lambda: 1e-4,
        beta: 3.0,
        rho: 0.05,
    };
    let tc = sae::config::TrainConfig::default();
    let e = sae::pipeline::train(&store, arch, pen, &tc, 1, &d.path().join("l.csv"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("s.arrow") && e.contains("108") && e.contains("192"),
        "{e}"
    );
}
