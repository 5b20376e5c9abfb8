//! Result tables: one row per (run, feature set, classifier), written with polars as
//! Parquet and CSV so that other tools (pandas, polars, R, a spreadsheet) read them.
//!
//! A run writes its own table (`results.parquet`, `results.csv`); a sweep gathers its
//! runs' tables into one, with a column per grid key. [`crate::report`] reads either.

use std::path::Path;

use polars::prelude::{
    Column, CsvWriter, DataFrame, DataType, ParquetReader, ParquetWriter, SerReader, SerWriter,
};

use crate::error::{Error, Result};

/// The table's file name, Parquet.
pub const PARQUET: &str = "results.parquet";
/// The table's file name, CSV.
pub const CSV: &str = "results.csv";

/// One row of a result table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// Run name.
    pub run: String,
    /// Grid values of a sweep run, (key, value).
    pub grid: Vec<(String, String)>,
    /// Feature set (`raw`, `step8-pool`, ...).
    pub features: String,
    /// Classifier.
    pub classifier: String,
    /// Test accuracy.
    pub accuracy: f64,
    /// Validation accuracy of the chosen setting (linear classifiers choosing L2 on a
    /// held-out split of the training images).
    pub validation: Option<f64>,
    /// The L2 weight a linear classifier used.
    pub l2: Option<f64>,
    /// Feature width.
    pub dim: u64,
    /// Grid step (none for raw pixels).
    pub step: Option<u64>,
    /// Feature mode (`concat`, `pool`, `raw`).
    pub mode: String,
    /// Encoder code (`sigmoid`, `softthreshold`, `triangle`, `raw`).
    pub code: String,
    /// Training patches.
    pub patches: u64,
    /// Hidden layer sizes, e.g. `25` or `75-48-75`.
    pub hidden: String,
    /// Final training loss.
    pub final_loss: f64,
    /// L-BFGS iterations or mini-batch steps the model was trained for.
    pub iterations: u64,
    /// Why its training stopped (`MaxIter`, `FunctionTolerance`, `epochs done`, ...).
    pub stop: String,
    /// Seconds to fit and predict.
    pub classify_seconds: f64,
    /// L-BFGS iterations of a linear classifier (its L2 path and refit).
    pub classify_iterations: Option<u64>,
    /// Seconds the run took so far.
    pub run_seconds: f64,
    /// Peak resident memory of the process, KiB.
    pub peak_rss_kb: u64,
    /// The training loss trace, relative to the table's folder.
    pub loss_csv: String,
    /// What the run did: `finished`, `failed`, `running`, `interrupted` (killed; it
    /// resumes when the sweep runs again) or `pending` (not started).
    pub status: String,
    /// The error a failed run stopped with.
    pub error: String,
    /// The stage it stopped in (`setup`, `sample`, `train`, `encode`, `classify`).
    pub stage: String,
    /// Hash of the run's whole config.
    pub config_hash: String,
    /// Version of the `sae` build that ran it (git revision, when known).
    pub git_rev: String,
    /// When the run started and ended (UTC, RFC 3339).
    pub started: String,
    /// See [`Record::started`].
    pub finished: String,
}

/// The status of a run that finished.
pub const FINISHED: &str = "finished";

impl Record {
    /// Orders results best first the way a setting may be chosen: by the validation
    /// accuracy a linear classifier chose its L2 on, where one was recorded; results of
    /// equal validation accuracy keep their order (a stable sort), since breaking the
    /// tie by test accuracy would choose on the test images. Results without one
    /// (random forests, raw baselines, a single L2) come after, by test accuracy, the
    /// only figure they have.
    pub fn rank(&self, other: &Record) -> std::cmp::Ordering {
        let val = |r: &Record| r.validation.filter(|v| v.is_finite());
        match (val(self), val(other)) {
            (Some(a), Some(b)) => b.total_cmp(&a),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => other.accuracy.total_cmp(&self.accuracy),
        }
    }
}

/// The records with a test accuracy, best first ([`Record::rank`]).
pub fn best_first(records: &[Record]) -> Vec<&Record> {
    let mut best: Vec<&Record> = records.iter().filter(|r| r.accuracy.is_finite()).collect();
    best.sort_by(|a, b| a.rank(b));
    best
}

/// Columns before the grid columns, and after.
const HEAD: [&str; 1] = ["run"];
const TAIL: [&str; 26] = [
    "status",
    "features",
    "classifier",
    "accuracy",
    "validation",
    "l2",
    "dim",
    "step",
    "mode",
    "code",
    "patches",
    "hidden",
    "final_loss",
    "iterations",
    "stop",
    "classify_seconds",
    "classify_iterations",
    "run_seconds",
    "peak_rss_kb",
    "loss_csv",
    "error",
    "stage",
    "config_hash",
    "git_rev",
    "started",
    "finished",
];

fn polars_err(path: &Path) -> impl Fn(polars::error::PolarsError) -> Error + '_ {
    move |e| Error::bad(path, format!("result table: {e}"))
}

/// The records as a data frame (grid keys of the first record become columns).
pub fn frame(records: &[Record]) -> Result<DataFrame> {
    let keys: Vec<String> = records
        .first()
        .map(|r| r.grid.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let strs = |f: &dyn Fn(&Record) -> String| records.iter().map(f).collect::<Vec<String>>();
    let mut cols = vec![Column::new("run".into(), strs(&|r| r.run.clone()))];
    for (i, k) in keys.iter().enumerate() {
        cols.push(Column::new(
            k.as_str().into(),
            strs(&|r| r.grid.get(i).map(|g| g.1.clone()).unwrap_or_default()),
        ));
    }
    let f64s = |f: &dyn Fn(&Record) -> f64| records.iter().map(f).collect::<Vec<f64>>();
    let u64s = |f: &dyn Fn(&Record) -> u64| records.iter().map(f).collect::<Vec<u64>>();
    let opt_f64s =
        |f: &dyn Fn(&Record) -> Option<f64>| records.iter().map(f).collect::<Vec<Option<f64>>>();
    cols.extend([
        Column::new("status".into(), strs(&|r| r.status.clone())),
        Column::new("features".into(), strs(&|r| r.features.clone())),
        Column::new("classifier".into(), strs(&|r| r.classifier.clone())),
        Column::new("accuracy".into(), f64s(&|r| r.accuracy)),
        Column::new("validation".into(), opt_f64s(&|r| r.validation)),
        Column::new("l2".into(), opt_f64s(&|r| r.l2)),
        Column::new("dim".into(), u64s(&|r| r.dim)),
        Column::new(
            "step".into(),
            records.iter().map(|r| r.step).collect::<Vec<Option<u64>>>(),
        ),
        Column::new("mode".into(), strs(&|r| r.mode.clone())),
        Column::new("code".into(), strs(&|r| r.code.clone())),
        Column::new("patches".into(), u64s(&|r| r.patches)),
        Column::new("hidden".into(), strs(&|r| r.hidden.clone())),
        Column::new("final_loss".into(), f64s(&|r| r.final_loss)),
        Column::new("iterations".into(), u64s(&|r| r.iterations)),
        Column::new("stop".into(), strs(&|r| r.stop.clone())),
        Column::new("classify_seconds".into(), f64s(&|r| r.classify_seconds)),
        Column::new(
            "classify_iterations".into(),
            records
                .iter()
                .map(|r| r.classify_iterations)
                .collect::<Vec<Option<u64>>>(),
        ),
        Column::new("run_seconds".into(), f64s(&|r| r.run_seconds)),
        Column::new("peak_rss_kb".into(), u64s(&|r| r.peak_rss_kb)),
        Column::new("loss_csv".into(), strs(&|r| r.loss_csv.clone())),
        Column::new("error".into(), strs(&|r| r.error.clone())),
        Column::new("stage".into(), strs(&|r| r.stage.clone())),
        Column::new("config_hash".into(), strs(&|r| r.config_hash.clone())),
        Column::new("git_rev".into(), strs(&|r| r.git_rev.clone())),
        Column::new("started".into(), strs(&|r| r.started.clone())),
        Column::new("finished".into(), strs(&|r| r.finished.clone())),
    ]);
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Writes `<dir>/results.parquet` and `<dir>/results.csv`, each atomically.
pub fn write(dir: &Path, records: &[Record]) -> Result<()> {
    let mut df = frame(records)?;
    for (name, parquet) in [(PARQUET, true), (CSV, false)] {
        let path = dir.join(name);
        let mut buf = Vec::new();
        if parquet {
            ParquetWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(polars_err(&path))?;
        } else {
            CsvWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(polars_err(&path))?;
        }
        crate::fsio::write_atomic(&path, &buf)?;
    }
    Ok(())
}

/// Reads a table written by [`write()`] (Parquet).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(polars_err(path))?;
    let bad = |m: String| Error::bad(path, m);
    let col = |name: &str, dtype: DataType| -> Result<Column> {
        df.column(name)
            .map_err(|_| bad(format!("no column `{name}`")))?
            .cast(&dtype)
            .map_err(|e| bad(format!("column `{name}`: {e}")))
    };
    let n = df.height();
    let text = |name: &str| -> Result<Vec<String>> {
        let c = col(name, DataType::String)?;
        let ca = c.str().map_err(|e| bad(e.to_string()))?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).unwrap_or_default().to_string())
            .collect())
    };
    let maybe_float = |name: &str| -> Result<Vec<Option<f64>>> {
        if df.column(name).is_err() {
            return Ok(vec![None; n]);
        }
        let c = col(name, DataType::Float64)?;
        let ca = c.f64().map_err(|e| bad(e.to_string()))?;
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    let float = |name: &str| -> Result<Vec<f64>> {
        let c = col(name, DataType::Float64)?;
        let ca = c.f64().map_err(|e| bad(e.to_string()))?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).unwrap_or(f64::NAN))
            .collect())
    };
    let int = |name: &str| -> Result<Vec<Option<u64>>> {
        let c = col(name, DataType::UInt64)?;
        let ca = c.u64().map_err(|e| bad(e.to_string()))?;
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    let grid_keys: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !HEAD.contains(&s.as_str()) && !TAIL.contains(&s.as_str()))
        .collect();
    let grid: Vec<Vec<String>> = grid_keys.iter().map(|k| text(k)).collect::<Result<_>>()?;
    let (run, features, classifier) = (text("run")?, text("features")?, text("classifier")?);
    let (mode, code, hidden, loss_csv) = (
        text("mode")?,
        text("code")?,
        text("hidden")?,
        text("loss_csv")?,
    );
    let (accuracy, final_loss) = (float("accuracy")?, float("final_loss")?);
    // Tables written before these columns existed read as "not recorded".
    let (iterations, stop) = if df.column("stop").is_ok() {
        (int("iterations")?, text("stop")?)
    } else {
        (vec![None; n], vec![String::new(); n])
    };
    // Tables written before runs had a status hold finished runs only.
    let has_status = df.column("status").is_ok();
    let optional = |name: &str, default: &str| -> Result<Vec<String>> {
        if has_status {
            text(name)
        } else {
            Ok(vec![default.to_string(); n])
        }
    };
    let status = optional("status", FINISHED)?;
    let (error, stage) = (optional("error", "")?, optional("stage", "")?);
    let (config_hash, git_rev) = (optional("config_hash", "")?, optional("git_rev", "")?);
    let (started, finished) = (optional("started", "")?, optional("finished", "")?);
    let (cs, rs) = (float("classify_seconds")?, float("run_seconds")?);
    let (validation, l2) = (maybe_float("validation")?, maybe_float("l2")?);
    let classify_iterations = if df.column("classify_iterations").is_ok() {
        int("classify_iterations")?
    } else {
        vec![None; n]
    };
    let (dim, step, patches, rss) = (
        int("dim")?,
        int("step")?,
        int("patches")?,
        int("peak_rss_kb")?,
    );
    Ok((0..n)
        .map(|i| Record {
            run: run[i].clone(),
            grid: grid_keys
                .iter()
                .zip(&grid)
                .map(|(k, v)| (k.clone(), v[i].clone()))
                .collect(),
            features: features[i].clone(),
            classifier: classifier[i].clone(),
            accuracy: accuracy[i],
            validation: validation[i],
            l2: l2[i],
            dim: dim[i].unwrap_or(0),
            step: step[i],
            mode: mode[i].clone(),
            code: code[i].clone(),
            patches: patches[i].unwrap_or(0),
            hidden: hidden[i].clone(),
            final_loss: final_loss[i],
            iterations: iterations[i].unwrap_or(0),
            stop: stop[i].clone(),
            classify_seconds: cs[i],
            classify_iterations: classify_iterations[i],
            run_seconds: rs[i],
            peak_rss_kb: rss[i].unwrap_or(0),
            loss_csv: loss_csv[i].clone(),
            status: status[i].clone(),
            error: error[i].clone(),
            stage: stage[i].clone(),
            config_hash: config_hash[i].clone(),
            git_rev: git_rev[i].clone(),
            started: started[i].clone(),
            finished: finished[i].clone(),
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(run: &str, step: Option<u64>, clf: &str, acc: f64) -> Record {
        Record {
            run: run.into(),
            grid: vec![("features.steps".into(), format!("{step:?}"))],
            features: step.map_or("raw".into(), |s| format!("step{s}-pool")),
            classifier: clf.into(),
            accuracy: acc,
            dim: 100,
            step,
            mode: "pool".into(),
            code: "sigmoid".into(),
            patches: 1000,
            hidden: "25".into(),
            final_loss: 0.5,
            iterations: 40,
            stop: "MaxIter".into(),
            classify_seconds: 1.5,
            // Linear classifiers record their path; the others leave it empty.
            validation: (clf == "svm").then_some(acc - 0.01),
            l2: (clf == "svm").then_some(1e-4),
            classify_iterations: (clf == "svm").then_some(300),
            run_seconds: 10.0,
            peak_rss_kb: 12345,
            loss_csv: format!("runs/{run}/loss.csv"),
            status: FINISHED.into(),
            config_hash: "0badf00d".into(),
            git_rev: "abc1234".into(),
            started: "2026-01-02T03:04:05Z".into(),
            finished: "2026-01-02T03:14:05Z".into(),
            ..Record::default()
        }
    }

    #[test]
    fn results_rank_by_validation_never_by_test_alone() {
        let with_val = |run: &str, val: f64, acc: f64| Record {
            validation: Some(val),
            ..record(run, Some(1), "svm", acc)
        };
        // Higher test accuracy neither outranks higher validation accuracy nor breaks
        // its ties: "b" and "c" keep their order.
        let mut recs = [
            record("forest", Some(1), "rf", 0.99),
            with_val("a", 0.70, 0.80),
            with_val("b", 0.75, 0.72),
            with_val("c", 0.75, 0.74),
            Record {
                validation: Some(f64::NAN),
                ..record("nan", Some(1), "svm", 0.9)
            },
        ];
        recs.sort_by(|a, b| a.rank(b));
        let order: Vec<&str> = recs.iter().map(|r| r.run.as_str()).collect();
        assert_eq!(order, ["b", "c", "a", "forest", "nan"]);
    }

    #[test]
    fn parquet_round_trip_and_csv_header() {
        let d = tempfile::tempdir().unwrap();
        let recs = vec![
            record("a", Some(8), "rf", 0.31),
            record("a", None, "lr", 0.25),
            record("b", Some(4), "svm", 0.375),
        ];
        write(d.path(), &recs).unwrap();
        assert_eq!(read(&d.path().join("results.parquet")).unwrap(), recs);
        let csv = std::fs::read_to_string(d.path().join("results.csv")).unwrap();
        let header = csv.lines().next().unwrap().trim_start_matches('\u{feff}');
        assert!(header
            .starts_with("run,features.steps,status,features,classifier,accuracy,validation,l2,"));
        assert_eq!(csv.lines().count(), 4);
    }

    #[test]
    fn a_table_from_before_later_columns_reads_as_not_recorded() {
        let d = tempfile::tempdir().unwrap();
        let recs = vec![record("a", Some(8), "svm", 0.31)];
        let mut df = frame(&recs).unwrap();
        for c in [
            "validation",
            "l2",
            "classify_iterations",
            "iterations",
            "stop",
            "status",
            "error",
            "stage",
            "config_hash",
            "git_rev",
            "started",
            "finished",
        ] {
            let _ = df.drop_in_place(c).unwrap();
        }
        let path = d.path().join("results.parquet");
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let back = read(&path).unwrap();
        assert_eq!((back[0].iterations, back[0].stop.as_str()), (0, ""));
        assert_eq!((back[0].validation, back[0].l2), (None, None));
        assert_eq!(back[0].classify_iterations, None);
        assert_eq!(back[0].accuracy, 0.31);
        assert_eq!(
            (back[0].status.as_str(), back[0].git_rev.as_str()),
            (FINISHED, "")
        );
        assert!(back[0].grid.iter().all(|(k, _)| k == "features.steps"));
    }

    #[test]
    fn a_table_missing_a_column_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut df =
            DataFrame::new_infer_height(vec![Column::new("run".into(), vec!["a"])]).unwrap();
        let path = d.path().join("results.parquet");
        let f = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(f).finish(&mut df).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("results.parquet") && e.contains("features"),
            "{e}"
        );
    }
}
