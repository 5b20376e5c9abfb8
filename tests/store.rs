//! Patch and feature stores: round trips, zero-copy reads, and damaged files.

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use sae::data::store::{concat, write_all, Kind, MemoryRows, Precision, Rows, Store, StoreWriter};
use sae::learn::sae::objective::{Objective, Penalty};
use sae::learn::sae::{Architecture, Decoder};

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
        assert!(v.is_view(), "f32 rows are read in place, not copied");
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

/// An f16 feature store keeps each value to f16's rounding, hands rows out converted
/// to f32, and survives concatenation as f16.
#[test]
fn f16_feature_stores_round_to_half_precision() {
    let d = tmp();
    let p = d.path().join("h.arrow");
    // Pooled codes: large sums beside small values.
    let x = rows(700, 12).mapv(|v| v * 3000.0 - 5.0);
    let ids: Vec<u32> = (0..700).collect();
    let mut w =
        StoreWriter::create_as(&p, Kind::Features, 12, Precision::F16, 256, &HashMap::new())
            .unwrap();
    w.push_rows(x.view(), &[&ids, &ids]).unwrap();
    w.finish().unwrap();
    let s = Store::open(&p, Kind::Features).unwrap();
    assert_eq!(
        (s.precision(), s.rows(), s.batches()),
        (Precision::F16, 700, 3)
    );
    // Half the bytes of the f32 file, less the shared columns and headers.
    let f = d.path().join("f.arrow");
    write_all(&f, Kind::Features, x.view(), &[&ids, &ids], &HashMap::new()).unwrap();
    let (half, full) = (
        std::fs::metadata(&p).unwrap().len(),
        std::fs::metadata(&f).unwrap().len(),
    );
    assert!(half < full * 2 / 3, "{half} vs {full}");
    let mut at = 0;
    let mut exact = 0;
    for b in 0..s.batches() {
        let v = s.batch(b).unwrap().values().to_owned();
        for (got, want) in v.iter().zip(x.slice(ndarray::s![at..at + v.nrows(), ..])) {
            // f16 keeps 11 significant bits.
            assert!((got - want).abs() <= want.abs() / 2048.0, "{got} vs {want}");
            exact += usize::from(got == want);
        }
        at += v.nrows();
    }
    assert_eq!(at, 700);
    assert!(exact < 700 * 12 / 2, "values were rounded");
    let span = s.span(300, 400).unwrap();
    let row = span.row(333).to_vec();
    assert_eq!(row, s.batch(1).unwrap().values().row(333 - 256).to_vec());

    let both = d.path().join("both.arrow");
    assert_eq!(
        concat(&[p.clone(), p.clone()], Kind::Features, &both).unwrap(),
        1400
    );
    let c = Store::open(&both, Kind::Features).unwrap();
    assert_eq!(c.precision(), Precision::F16);
    let e = concat(
        &[p.clone(), f.clone()],
        Kind::Features,
        &d.path().join("mixed.arrow"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("f.arrow") && e.contains("f32") && e.contains("f16"),
        "{e}"
    );
}

/// A value f16 cannot hold stops the writer with the file and the key to change.
#[test]
fn values_beyond_f16_are_refused() {
    let d = tmp();
    let p = d.path().join("h.arrow");
    let mut w =
        StoreWriter::create_as(&p, Kind::Features, 3, Precision::F16, 8, &HashMap::new()).unwrap();
    w.push(&[1.0, 65_000.0, -65_000.0], &[0, 0]).unwrap();
    let e = w
        .push(&[1.0, 2.0, 70_000.0], &[1, 0])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("h.arrow") && e.contains("70000") && e.contains("features.precision"),
        "{e}"
    );
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

/// Runs a Python script with polars; panics with what to install if it cannot.
fn python_polars(script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 (needed by this test) runs");
    assert!(
        out.status.success(),
        "python polars failed (pip install polars): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Another tool reads what `sae` writes: the Arrow patch store and the Parquet and
/// CSV result tables, value for value.
#[test]
#[ignore = "needs python3 with polars (pip install polars); .ci/run installs it and runs it"]
fn polars_reads_the_store_and_the_result_tables() {
    let d = tmp();
    let p = d.path().join("s.arrow");
    let x = rows(300, 12);
    let ids: Vec<u32> = (0..300).collect();
    let mut w = StoreWriter::create(&p, Kind::Patches, 12, 128, &HashMap::new()).unwrap();
    w.push_rows(x.view(), &[&ids, &ids, &ids]).unwrap();
    w.finish().unwrap();
    let got = python_polars(
        "import sys, polars as pl\n\
         df = pl.read_ipc(sys.argv[1])\n\
         print(df.height, df.schema['patch'], df['image'].sum(), '%.6f' % df['patch'][7][3])",
        &[&p],
    );
    let want = format!(
        "300 Array(Float32, shape=(12,)) {} {:.6}",
        299 * 300 / 2,
        x[[7, 3]]
    );
    assert_eq!(got, want);

    // An f16 feature file reads as Float16, each value as `sae` itself reads it.
    let h = d.path().join("h.arrow");
    let big = x.mapv(|v| v * 1000.0);
    let mut w =
        StoreWriter::create_as(&h, Kind::Features, 12, Precision::F16, 128, &HashMap::new())
            .unwrap();
    w.push_rows(big.view(), &[&ids, &ids]).unwrap();
    w.finish().unwrap();
    let got = python_polars(
        "import sys, polars as pl\n\
         df = pl.read_ipc(sys.argv[1])\n\
         print(df.height, df.schema['features'], '%.4f' % df['features'][7][3])",
        &[&h],
    );
    let ours = Store::open(&h, Kind::Features)
        .unwrap()
        .batch(0)
        .unwrap()
        .values()[[7, 3]];
    assert_ne!(ours, big[[7, 3]], "the value is one f16 rounds");
    assert_eq!(got, format!("300 Array(Float16, shape=(12,)) {ours:.4}"));

    let recs: Vec<sae::evaluate::results::Record> = (0..3)
        .map(|i| sae::evaluate::results::Record {
            run: format!("r{i}"),
            grid: vec![("model.rho".into(), format!("0.0{i}"))],
            features: "step8-pool".into(),
            classifier: "svm".into(),
            accuracy: 0.25 + i as f64 / 8.0,
            dim: 100 + i,
            step: Some(8),
            mode: "pool".into(),
            code: "sigmoid".into(),
            patches: 1000,
            hidden: "25".into(),
            final_loss: 1.5 * i as f64,
            iterations: 40 + i,
            stop: "MaxIter".into(),
            classify_seconds: 0.5,
            run_seconds: 2.0,
            peak_rss_kb: 1234,
            loss_csv: "loss.csv".into(),
            status: "finished".into(),
            ..Default::default()
        })
        .collect();
    sae::evaluate::results::write(d.path(), &recs).unwrap();
    let script = "import sys, polars as pl\n\
                  for df in (pl.read_parquet(sys.argv[1]), pl.read_csv(sys.argv[2])):\n\
                  \x20   print(df.height, df['model.rho'].cast(pl.Utf8).to_list(), df['accuracy'].to_list(), df['iterations'].to_list(), df['stop'][0])";
    let got = python_polars(
        script,
        &[
            &d.path().join("results.parquet"),
            &d.path().join("results.csv"),
        ],
    );
    let line = "3 ['0.00', '0.01', '0.02'] [0.25, 0.375, 0.5] [40, 41, 42] MaxIter";
    // CSV readers infer the grid column's type: "0.00" may come back as 0.0.
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some(line), "{got}");
    let csv = lines.next().unwrap_or_default();
    assert!(
        csv.starts_with("3 [") && csv.ends_with("[0.25, 0.375, 0.5] [40, 41, 42] MaxIter"),
        "{got}"
    );
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
    let tc = sae::run::config::TrainConfig::default();
    let job = sae::learn::training::TrainJob::new(arch, pen, tc.optimiser(), 1);
    let e = sae::learn::training::train(&store, &job, &d.path().join("l.csv"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("s.arrow") && e.contains("108") && e.contains("192"),
        "{e}"
    );
}
