//! Reports: a result table ([`crate::evaluate::results`]) turned into study-style markdown
//! tables, plots (accuracy vs step per classifier, accuracy vs number of patches, loss
//! curves; PNG and SVG) and one static HTML page that shows them, openable from disk.

pub mod plot;
pub mod show;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::evaluate::results::{best_first, Record};
use crate::report::plot::{Figure, Series};

/// Grid keys that are an axis of a plot rather than part of a series' name.
const STEP_KEYS: [&str; 1] = ["features.steps"];
const PATCH_KEYS: [&str; 1] = ["patches.count"];

/// What [`write_report`] produced.
#[derive(Debug)]
pub struct Report {
    /// The report folder.
    pub dir: PathBuf,
    /// The markdown table.
    pub markdown: String,
    /// Plot stems written (each as `.png` and `.svg`).
    pub plots: Vec<String>,
}

/// The table of `records` as markdown: one line per (run, feature set), one column per
/// classifier, as the study reports them (test accuracy, with the validation accuracy
/// of the chosen setting where a classifier chose one); runs that did not finish
/// follow in a table of their own, with their status and error.
pub fn markdown(records: &[Record]) -> String {
    let (done, other): (Vec<Record>, Vec<Record>) = records
        .iter()
        .cloned()
        .partition(|r| r.status == crate::evaluate::results::FINISHED);
    let mut out = accuracy_table(&done);
    if !other.is_empty() {
        out.push_str(
            "\nRuns that did not finish:\n\n| run | status | stage | error |\n|---|---|---|---|\n",
        );
        for r in &other {
            let error = r.error.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(out, "| {} | {} | {} | {error} |", r.run, r.status, r.stage);
        }
    }
    out
}

fn accuracy_table(records: &[Record]) -> String {
    let mut classifiers: Vec<&str> = Vec::new();
    for r in records {
        if !classifiers.contains(&r.classifier.as_str()) {
            classifiers.push(&r.classifier);
        }
    }
    let keys: Vec<&str> = records
        .first()
        .map(|r| r.grid.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    type Scores = (f64, Option<f64>);
    let mut rows: Vec<(&Record, BTreeMap<&str, Scores>)> = Vec::new();
    for r in records {
        let scores = (r.accuracy, r.validation);
        match rows
            .iter_mut()
            .find(|(h, _)| h.run == r.run && h.features == r.features)
        {
            Some((_, m)) => {
                m.insert(&r.classifier, scores);
            }
            None => rows.push((r, BTreeMap::from([(r.classifier.as_str(), scores)]))),
        }
    }
    let mut out = String::from("| run |");
    for k in &keys {
        let _ = write!(out, " {k} |");
    }
    out.push_str(" features | dim |");
    for c in &classifiers {
        let _ = write!(out, " {c} |");
    }
    out.push_str(" final loss |\n|---|");
    for _ in 0..keys.len() + 2 + classifiers.len() + 1 {
        out.push_str("---|");
    }
    out.push('\n');
    for (r, accs) in rows {
        let _ = write!(out, "| {} |", r.run);
        for (_, v) in &r.grid {
            let _ = write!(out, " {v} |");
        }
        let _ = write!(out, " {} | {} |", r.features, r.dim);
        for c in &classifiers {
            // Test accuracy, with the validation accuracy that chose the setting.
            match accs.get(c) {
                Some((a, Some(v))) => {
                    let _ = write!(out, " {:.1} % (val {:.1} %) |", 100.0 * a, 100.0 * v);
                }
                Some((a, None)) => {
                    let _ = write!(out, " {:.1} % |", 100.0 * a);
                }
                None => out.push_str(" |"),
            }
        }
        let _ = writeln!(out, " {:.6} |", r.final_loss);
    }
    out
}

/// Grid keys whose value differs between records (the others name no series).
fn varying(records: &[Record]) -> Vec<String> {
    let keys: Vec<&String> = records
        .first()
        .map(|r| r.grid.iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    keys.into_iter()
        .filter(|k| {
            let mut vals = records
                .iter()
                .filter_map(|r| r.grid.iter().find(|(g, _)| g == *k).map(|(_, v)| v));
            let first = vals.next();
            vals.any(|v| Some(v) != first)
        })
        .cloned()
        .collect()
}

/// Name of the series a record belongs to, leaving out the grid keys in `axis` and
/// those not in `varying`.
fn series_name(r: &Record, axis: &[&str], varying: &[String], with_features: bool) -> String {
    let mut s = r.classifier.clone();
    if with_features {
        let _ = write!(s, " {}", r.features);
    } else {
        let _ = write!(s, " {}", r.mode);
        if r.code != "sigmoid" {
            let _ = write!(s, " {}", r.code);
        }
    }
    for (k, v) in &r.grid {
        if !axis.contains(&k.as_str()) && !STEP_KEYS.contains(&k.as_str()) && varying.contains(k) {
            let short = k.rsplit('.').next().unwrap_or(k);
            let _ = write!(s, " {short}={v}");
        }
    }
    s
}

fn group(points: Vec<(String, f64, f64)>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for (name, x, y) in points {
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((x, y)),
            None => out.push(Series {
                name,
                points: vec![(x, y)],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The loss trace in a `loss.csv`: (iteration, loss).
fn read_loss(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut pts = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parse = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok());
        match (parse(0), parse(2)) {
            (Some(it), Some(loss)) => pts.push((it, loss)),
            _ => return Err(Error::bad(path, format!("line {}: not a loss row", i + 1))),
        }
    }
    Ok(pts)
}

/// The plots of `records` (whose loss files are relative to `base`).
pub fn figures(records: &[Record], base: &Path) -> Result<Vec<(String, Figure)>> {
    let mut figs = Vec::new();
    let vary = varying(records);
    let distinct = |f: &dyn Fn(&Record) -> Option<u64>| {
        let mut v: Vec<u64> = records.iter().filter_map(f).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    if distinct(&|r| r.step) >= 2 {
        let pts = records
            .iter()
            .filter_map(|r| {
                r.step
                    .map(|s| (series_name(r, &[], &vary, false), s as f64, r.accuracy))
            })
            .collect();
        figs.push((
            "accuracy-vs-step".to_string(),
            Figure {
                title: "Test accuracy by grid step".into(),
                x_label: "step (pixels between patches)".into(),
                y_label: "accuracy".into(),
                log_x: false,
                x_names: Vec::new(),
                series: group(pts),
            },
        ));
    }
    if distinct(&|r| Some(r.patches)) >= 2 {
        let pts = records
            .iter()
            .map(|r| {
                (
                    series_name(r, &PATCH_KEYS, &vary, true),
                    r.patches as f64,
                    r.accuracy,
                )
            })
            .collect();
        figs.push((
            "accuracy-vs-patches".to_string(),
            Figure {
                title: "Test accuracy by number of training patches".into(),
                x_label: "training patches".into(),
                y_label: "accuracy".into(),
                log_x: true,
                x_names: Vec::new(),
                series: group(pts),
            },
        ));
    }
    // Every other grid axis: accuracy against it, on a numeric axis when all its values
    // are numbers, else one position per value in the order they first appear.
    for key in &vary {
        if STEP_KEYS.contains(&key.as_str()) || PATCH_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = |r: &Record| r.grid.iter().find(|(k, _)| k == key).map(|g| g.1.clone());
        let mut names: Vec<String> = Vec::new();
        for v in records.iter().filter_map(value) {
            if !names.contains(&v) {
                names.push(v);
            }
        }
        if names
            .iter()
            .any(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
        {
            names.clear();
        }
        let pts: Vec<(String, f64, f64)> = records
            .iter()
            .filter_map(|r| {
                let v = value(r)?;
                let x = match names.iter().position(|n| *n == v) {
                    Some(k) => k as f64,
                    None => v.parse::<f64>().ok()?,
                };
                Some((series_name(r, &[key.as_str()], &vary, true), x, r.accuracy))
            })
            .filter(|p| p.1.is_finite() && p.2.is_finite())
            .collect();
        let mut xs: Vec<f64> = pts.iter().map(|p| p.1).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        if xs.len() < 2 {
            continue;
        }
        let log_x = names.is_empty() && xs[0] > 0.0 && xs[xs.len() - 1] / xs[0] >= 20.0;
        figs.push((
            // A stem without dots: the plot's files add their extensions to it.
            format!("accuracy-vs-{}", key.replace('.', "-")),
            Figure {
                title: format!("Accuracy by {key}"),
                x_label: key.clone(),
                y_label: "accuracy".into(),
                log_x,
                x_names: names,
                series: group(pts),
            },
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut series = Vec::new();
    for r in records {
        if r.loss_csv.is_empty() || seen.contains(&r.loss_csv.as_str()) {
            continue;
        }
        seen.push(&r.loss_csv);
        series.push(Series {
            name: r.run.clone(),
            points: read_loss(&base.join(&r.loss_csv))?,
        });
    }
    if !series.is_empty() {
        figs.push((
            "loss".to_string(),
            Figure {
                title: "Training loss".into(),
                x_label: "iteration (mini-batch: step)".into(),
                y_label: "loss".into(),
                log_x: false,
                x_names: Vec::new(),
                series,
            },
        ));
    }
    Ok(figs)
}

/// A classifier's confusion matrix on the images it was scored on.
pub struct Confusion {
    /// What was scored: run, feature set and classifier.
    pub title: String,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Counts, true class (row) by predicted class (column).
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// Reads a confusion matrix as `sae run` writes it (`confusion/<set>-<clf>.csv`).
    pub fn read(path: &Path, title: String) -> Result<Confusion> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let bad = |m: &str| Error::bad(path, m.to_string());
        let mut lines = text.lines();
        let head = lines.next().ok_or_else(|| bad("empty confusion matrix"))?;
        let classes: Vec<String> = head.split(',').skip(1).map(str::to_string).collect();
        let counts = lines
            .map(|l| {
                l.split(',')
                    .skip(1)
                    .map(|v| {
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| bad("a count is not a number"))
                    })
                    .collect::<Result<Vec<u64>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        if counts.len() != classes.len() || counts.iter().any(|r| r.len() != classes.len()) {
            return Err(bad("the matrix is not square with one row per class"));
        }
        Ok(Confusion {
            title,
            classes,
            counts,
        })
    }

    /// Accuracy on the images of each class (NaN for a class with none).
    pub fn per_class(&self) -> Vec<f64> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| row[i] as f64 / row.iter().sum::<u64>() as f64)
            .collect()
    }

    /// The matrix as an HTML table whose cells are shaded by their share of the row.
    fn heat_map(&self) -> String {
        let mut out = format!(
            "<h3>{}</h3>\n<table class=\"heat\"><tr><th>true \\ predicted</th>",
            escape(&self.title)
        );
        for c in &self.classes {
            let _ = write!(out, "<th>{}</th>", escape(c));
        }
        out.push_str("<th>accuracy</th></tr>\n");
        for ((name, row), acc) in self.classes.iter().zip(&self.counts).zip(self.per_class()) {
            let total = row.iter().sum::<u64>().max(1) as f64;
            let _ = write!(out, "<tr><th>{}</th>", escape(name));
            for &v in row {
                let share = v as f64 / total;
                let text = if share > 0.5 { "#fff" } else { "#000" };
                let _ = write!(
                    out,
                    "<td style=\"background:rgba(33,102,172,{share:.3});color:{text}\">{v}</td>"
                );
            }
            let _ = writeln!(out, "<td>{:.1} %</td></tr>", 100.0 * acc);
        }
        out.push_str("</table>\n");
        out
    }
}

/// Per-class accuracy of each confusion matrix as a markdown table (one column each).
fn per_class_markdown(conf: &[Confusion]) -> String {
    let Some(first) = conf.first() else {
        return String::new();
    };
    let mut out = String::from("| class |");
    for c in conf {
        let _ = write!(out, " {} |", c.title);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(conf.len()));
    out.push('\n');
    let accs: Vec<Vec<f64>> = conf.iter().map(Confusion::per_class).collect();
    for (i, name) in first.classes.iter().enumerate() {
        let _ = write!(out, "| {name} |");
        for a in &accs {
            match a.get(i) {
                Some(v) => {
                    let _ = write!(out, " {:.1} % |", 100.0 * v);
                }
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The confusion matrices of the best `n` finished results ([`best_first`]), read from
/// their runs' folders (found beside their loss traces, relative to `base`).
fn best_confusions(records: &[Record], base: &Path, n: usize) -> Result<Vec<Confusion>> {
    let best = best_first(records);
    let mut out = Vec::new();
    for r in best
        .into_iter()
        .filter(|r| !r.classifier.is_empty())
        .take(n)
    {
        let run_dir = base.join(Path::new(&r.loss_csv).parent().unwrap_or(Path::new("")));
        let path = run_dir
            .join("confusion")
            .join(format!("{}-{}.csv", r.features, r.classifier));
        if path.exists() {
            let title = format!("{} {} {}", r.run, r.features, r.classifier);
            out.push(Confusion::read(&path, title)?);
        }
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The filter and patch pictures of every run with a finished result, best first
/// ([`best_first`]), copied into `<dir>/pictures/` so that the report folder stands
/// alone: (run, paths relative to `dir`).
fn run_pictures(records: &[Record], base: &Path, dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let best = best_first(records);
    let into = dir.join(PICTURES);
    let _ = std::fs::remove_dir_all(&into);
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in best {
        if out.iter().any(|(run, _)| *run == r.run) {
            continue;
        }
        let rel = Path::new(&r.loss_csv).parent().unwrap_or(Path::new(""));
        let stem: String = r
            .run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut pics = Vec::new();
        for f in ["filters.png", "patches.png"] {
            let from = base.join(rel).join(f);
            if !from.exists() {
                continue;
            }
            std::fs::create_dir_all(&into).map_err(Error::io(&into))?;
            let name = format!("{stem}-{f}");
            std::fs::copy(&from, into.join(&name)).map_err(Error::io(&from))?;
            pics.push(format!("{PICTURES}/{name}"));
        }
        if !pics.is_empty() {
            out.push((r.run.clone(), pics));
        }
    }
    Ok(out)
}

/// Folder of the report that holds the runs' pictures.
const PICTURES: &str = "pictures";

/// Runs whose pictures the page shows open; the others' are folded away.
const OPEN_PICTURES: usize = 4;

/// The page: markdown tables as HTML tables, other lines as paragraphs, then the
/// plots, the filters and the confusion heat maps.
fn html(
    title: &str,
    md: &str,
    plots: &[String],
    conf: &[Confusion],
    pictures: &[(String, Vec<String>)],
) -> String {
    let title = escape(title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>\n\
         <h1>{title}</h1>\n"
    );
    let mut in_table = false;
    let mut header = false;
    for line in md.lines() {
        let is_row = line.starts_with('|');
        if is_row && !in_table {
            out.push_str("<table>\n");
            (in_table, header) = (true, true);
        } else if !is_row && in_table {
            out.push_str("</table>\n");
            in_table = false;
        }
        if is_row {
            if line.starts_with("|---") {
                continue;
            }
            // Cells split on `|` not escaped as `\|`.
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .replace("\\|", "\u{1}")
                .split('|')
                .map(|c| c.trim().replace('\u{1}', "|"))
                .collect();
            let tag = if header { "th" } else { "td" };
            header = false;
            out.push_str("<tr>");
            for c in cells {
                let _ = write!(out, "<{tag}>{}</{tag}>", escape(&c));
            }
            out.push_str("</tr>\n");
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", escape(h));
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    for p in plots {
        let _ = writeln!(
            out,
            "<h2>{p}</h2>\n<p><img src=\"{p}.svg\" alt=\"{p}\"> <a href=\"{p}.png\">PNG</a></p>"
        );
    }
    if !pictures.is_empty() {
        out.push_str("<h2>Learned filters and training patches (best run first, by validation accuracy)</h2>\n");
        for (k, (run, pics)) in pictures.iter().enumerate() {
            if k == OPEN_PICTURES {
                let more = pictures.len() - OPEN_PICTURES;
                let s = if more == 1 { "" } else { "s" };
                let _ = writeln!(out, "<details><summary>{more} more run{s}</summary>");
            }
            let _ = write!(out, "<h3>{}</h3>\n<p>", escape(run));
            for p in pics {
                let _ = write!(out, "<img src=\"{p}\" alt=\"{p}\"> ");
            }
            out.push_str("</p>\n");
        }
        if pictures.len() > OPEN_PICTURES {
            out.push_str("</details>\n");
        }
    }
    if !conf.is_empty() {
        out.push_str("<h2>Confusion matrices (best results by validation accuracy)</h2>\n");
        for c in conf {
            out.push_str(&c.heat_map());
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes the report of the result table at `table` (a `results.parquet`, or a run or
/// sweep folder holding one) into `<folder>/report/`.
pub fn write_report(table: &Path) -> Result<Report> {
    let path = if table.is_dir() {
        table.join(crate::evaluate::results::PARQUET)
    } else {
        table.to_path_buf()
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let records = crate::evaluate::results::read(&path)?;
    if records.is_empty() {
        return Err(Error::bad(&path, "the result table has no rows"));
    }
    let dir = base.join("report");
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let md = markdown(&records);
    let finished: Vec<Record> = records
        .iter()
        .filter(|r| r.status == crate::evaluate::results::FINISHED)
        .cloned()
        .collect();
    let mut plots = Vec::new();
    for (stem, fig) in figures(&finished, &base)? {
        fig.save(&dir.join(&stem))?;
        plots.push(stem);
    }
    let title = format!(
        "Results: {}",
        base.file_name().map_or("".into(), |n| n.to_string_lossy())
    );
    let conf = best_confusions(&finished, &base, 4)?;
    let pictures = run_pictures(&finished, &base, &dir)?;
    let mut md = md;
    if !conf.is_empty() {
        md.push_str("\n## Per-class accuracy (best results by validation accuracy)\n\n");
        md.push_str(&per_class_markdown(&conf));
    }
    let mut doc = format!("# {title}\n\n{md}\n");
    for p in &plots {
        let _ = writeln!(doc, "![{p}]({p}.svg)\n");
    }
    for (run, pics) in &pictures {
        for p in pics {
            let _ = writeln!(doc, "![{run}]({p})\n");
        }
    }
    crate::fsio::write_atomic(&dir.join("report.md"), doc.as_bytes())?;
    crate::fsio::write_atomic(
        &dir.join("index.html"),
        html(&title, &md, &plots, &conf, &pictures).as_bytes(),
    )?;
    Ok(Report {
        dir,
        markdown: md,
        plots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::results::tests::record;

    #[test]
    fn every_grid_axis_gets_a_plot() {
        let d = tempfile::tempdir().unwrap();
        let mut recs = Vec::new();
        for (k, rho) in ["0.01", "0.1", "1.0"].iter().enumerate() {
            for lr in ["adam", "sgd"] {
                let mut r = record(&format!("r{k}{lr}"), Some(8), "svm", 0.3 + k as f64 / 10.0);
                r.grid = vec![
                    ("features.steps".into(), "[8]".into()),
                    ("model.rho".into(), rho.to_string()),
                    ("train.optimizer".into(), lr.into()),
                ];
                r.loss_csv = String::new();
                recs.push(r);
            }
        }
        let figs = figures(&recs, d.path()).unwrap();
        let names: Vec<&str> = figs.iter().map(|(n, _)| n.as_str()).collect();
        // One series per value of the other axes.
        assert_eq!(
            names,
            ["accuracy-vs-model-rho", "accuracy-vs-train-optimizer"]
        );
        let f = &figs[0].1;
        assert!(f.log_x && f.x_names.is_empty());
        assert_eq!(f.series.len(), 2);
        assert!(f.series.iter().all(|s| s.points.len() == 3));
        // Words: one position each, in the order they first appear.
        let f = &figs[1].1;
        assert!(!f.log_x);
        assert_eq!(f.x_names, ["adam", "sgd"]);
        assert_eq!(f.series.len(), 3);
        assert!(f
            .series
            .iter()
            .all(|s| s.points.iter().map(|p| p.0).eq([0.0, 1.0])));
        assert!(f.svg().contains(">sgd</text>"));
    }

    #[test]
    fn runs_that_did_not_finish_are_listed_apart_with_their_error() {
        let ok = record("good", Some(8), "svm", 0.5);
        let bad = Record {
            run: "bad".into(),
            status: "failed".into(),
            stage: "train".into(),
            error: "loss diverged | at step 1".into(),
            accuracy: f64::NAN,
            ..Record::default()
        };
        let md = markdown(&[bad, ok]);
        let (table, rest) = md.split_once("Runs that did not finish").unwrap();
        assert!(table.contains("| good |") && !table.contains("bad"), "{md}");
        assert!(
            rest.contains("| bad | failed | train | loss diverged \\| at step 1 |"),
            "{md}"
        );
    }

    #[test]
    fn report_has_table_plots_and_page() {
        let d = tempfile::tempdir().unwrap();
        let mut recs = Vec::new();
        // Test accuracy ranks r24 first (rf); validation, which ranks, puts r16 first.
        for (run, step, val) in [("r8", 8, 0.26), ("r16", 16, 0.28), ("r24", 24, 0.22)] {
            std::fs::create_dir_all(d.path().join("runs").join(run)).unwrap();
            std::fs::write(
                d.path().join(format!("runs/{run}/loss.csv")),
                "iteration,evaluations,loss,max_abs_gradient,seconds\n0,1,2.5,,0.1\n1,2,1.25,0.5,0.2\n",
            )
            .unwrap();
            recs.push(record(run, Some(step), "rf", 0.3 + step as f64 / 100.0));
            recs.push(record(run, Some(step), "lr", 0.2));
            recs.push(Record {
                validation: Some(val),
                ..record(run, Some(step), "svm", 0.25)
            });
        }
        // A confusion matrix where `sae run` leaves it: rf's, ranked after the three
        // svm results (which have validation accuracy) but among the best four.
        std::fs::create_dir_all(d.path().join("runs/r24/confusion")).unwrap();
        for run in ["r8", "r16", "r24"] {
            std::fs::write(d.path().join(format!("runs/{run}/filters.png")), run).unwrap();
        }
        std::fs::write(
            d.path().join("runs/r24/confusion/step24-pool-rf.csv"),
            "true\\predicted,cat,dog\ncat,3,1\ndog,0,2\n",
        )
        .unwrap();
        crate::evaluate::results::write(d.path(), &recs).unwrap();
        let rep = write_report(d.path()).unwrap();
        assert!(rep.markdown.contains("| rf | lr |"), "{}", rep.markdown);
        // svm chose its L2 on validation data, which the table shows beside test.
        assert!(
            rep.markdown
                .contains("| 46.0 % | 20.0 % | 25.0 % (val 28.0 %) |"),
            "{}",
            rep.markdown
        );
        assert_eq!(rep.plots, vec!["accuracy-vs-step", "loss"]);
        for f in [
            "accuracy-vs-step.png",
            "accuracy-vs-step.svg",
            "loss.png",
            "loss.svg",
            "report.md",
            "index.html",
        ] {
            assert!(rep.dir.join(f).exists(), "{f}");
        }
        let md = std::fs::read_to_string(rep.dir.join("report.md")).unwrap();
        assert!(md.contains("| class | r24 step24-pool rf |"), "{md}");
        assert!(
            md.contains("| cat | 75.0 % |") && md.contains("| dog | 100.0 % |"),
            "{md}"
        );
        let page = std::fs::read_to_string(rep.dir.join("index.html")).unwrap();
        assert!(page.contains("<img src=\"accuracy-vs-step.svg\""));
        // Results (header + 3 runs), per-class accuracy (header + 2), heat map (header + 2).
        assert_eq!(page.matches("<tr>").count(), 4 + 3 + 3, "{page}");
        assert!(page.contains("rgba(33,102,172,0.750)") && page.contains("<th>dog</th>"));
        // Every run's filters, copied into the report folder, the best run (by
        // validation) first.
        let at = |run: &str| {
            let src = format!("<img src=\"pictures/{run}-filters.png\"");
            let copy = std::fs::read(rep.dir.join(format!("pictures/{run}-filters.png")));
            assert_eq!(copy.unwrap(), run.as_bytes());
            page.find(&src).unwrap_or_else(|| panic!("{src}: {page}"))
        };
        assert!(at("r16") < at("r8") && at("r8") < at("r24"), "{page}");
        assert!(
            !page.contains("../") && !page.contains("<details>"),
            "{page}"
        );
    }

    #[test]
    fn a_broken_loss_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let recs = vec![record("r", Some(8), "rf", 0.3)];
        std::fs::create_dir_all(d.path().join("runs/r")).unwrap();
        std::fs::write(d.path().join("runs/r/loss.csv"), "header\nnot,a,row\n").unwrap();
        crate::evaluate::results::write(d.path(), &recs).unwrap();
        let e = write_report(d.path()).unwrap_err().to_string();
        assert!(e.contains("loss.csv") && e.contains("line 2"), "{e}");
    }
}
