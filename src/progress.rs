//! Progress of long stages on stderr: count, rate and ETA. On a terminal an
//! `indicatif` bar redraws in place (messages print above it); otherwise (logs, CI) a
//! line every 10 % keeps logs short and greppable. `set_quiet` silences everything;
//! `set_json` turns every message into one JSON object per line, for log collectors. A run of a sweep
//! also keeps its latest progress in a small JSON file ([`set_status_file`]), which
//! `sae status` reads.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static PLAIN: AtomicBool = AtomicBool::new(false);
static STATUS_FILE: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);
/// The bar on the terminal now, so that messages print above it instead of through it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Keeps the latest progress of every stage in `path` (rewritten at most once a
/// second, whole), or stops doing so (`None`).
pub fn set_status_file(path: Option<std::path::PathBuf>) {
    *STATUS_FILE.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

/// The latest progress a process recorded with [`set_status_file`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The stage's label.
    pub stage: String,
    /// Units done.
    pub done: usize,
    /// Units in all.
    pub total: usize,
    /// What is counted.
    pub unit: String,
    /// Units per second so far.
    pub rate_per_s: f64,
    /// Seconds left at that rate.
    pub eta_s: f64,
}

fn write_status(snap: &Snapshot) {
    let guard = STATUS_FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = guard.as_ref() {
        // Written whole under another name and renamed, so a reader never sees half
        // of it; not synced, since it is rewritten every second.
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(snap).expect("snapshot serialises");
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Switches messages to JSON lines (`{"elapsed_s":..,"event":..,...}`).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

fn process_seconds() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Prints progress as lines even on a terminal (no bar): for processes that share
/// one terminal.
pub fn set_plain(on: bool) {
    PLAIN.store(on, Ordering::Relaxed);
}

/// Silences (or re-enables) progress output for the whole process.
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// True when progress output is silenced.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Progress of one stage.
pub struct Progress {
    label: String,
    unit: &'static str,
    total: usize,
    done: usize,
    start: Instant,
    last_decile: usize,
    last_status: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Starts tracking `total` units of work.
    pub fn new(label: impl Into<String>, total: usize, unit: &'static str) -> Self {
        let now = Instant::now();
        let label = label.into();
        let plain = json() || quiet() || PLAIN.load(Ordering::Relaxed);
        let bar = (std::io::stderr().is_terminal() && !plain).then(|| {
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{{msg}}: {{bar:30}} {{human_pos}}/{{human_len}} {unit} \
                 ({{per_sec}}, ETA {{eta}})"
            ))
            .expect("valid template");
            let bar = indicatif::ProgressBar::new(total as u64)
                .with_style(style)
                .with_message(label.clone());
            *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Progress {
            label,
            unit,
            total,
            done: 0,
            start: now,
            last_decile: 0,
            last_status: now,
            bar,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        Snapshot {
            stage: self.label.clone(),
            done: self.done,
            total: self.total,
            unit: self.unit.into(),
            rate_per_s: rate,
            eta_s: self.total.saturating_sub(self.done) as f64 / rate.max(1e-9),
        }
    }

    /// Records `n` more units done.
    pub fn inc(&mut self, n: usize) {
        self.done += n;
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.last_status = Instant::now();
            write_status(&self.snapshot());
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
            return;
        }
        let decile = self.done * 10 / self.total.max(1);
        if decile > self.last_decile && self.done < self.total {
            self.last_decile = decile;
            self.print(false);
        }
    }

    fn print(&self, end: bool) {
        if quiet() {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        if json() {
            let v = serde_json::json!({
                "elapsed_s": process_seconds(), "event": "progress", "stage": self.label,
                "done": self.done, "total": self.total, "unit": self.unit,
                "rate_per_s": rate, "eta_s": if end { 0.0 } else { left }, "finished": end,
            });
            eprintln!("{v}");
            return;
        }
        let line = if end {
            format!(
                "{}: {} {} in {:.1} s ({})",
                self.label,
                self.done,
                self.unit,
                secs,
                rate_text(rate, self.unit)
            )
        } else {
            format!(
                "{}: {}/{} {} ({}, ETA {:.0} s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                rate_text(rate, self.unit),
                left
            )
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Takes the bar off the terminal, once.
    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Prints the final line and returns the seconds taken.
    pub fn finish(mut self) -> f64 {
        self.clear_bar();
        self.print(true);
        self.start.elapsed().as_secs_f64()
    }
}

impl Drop for Progress {
    /// Records where the stage ended, also when it ends early (an error), and takes its
    /// bar off the terminal.
    fn drop(&mut self) {
        write_status(&self.snapshot());
        self.clear_bar();
    }
}

/// A rate with enough digits to read when it is slow (an OMP-1 pass or a classifier
/// iteration can take seconds, which `{:.0}` would print as "0 passes/s").
/// Two significant digits below 10 per second.
fn rate_text(rate: f64, unit: &str) -> String {
    let digits = if rate > 0.0 && rate.is_finite() {
        (1.0 - rate.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        0
    };
    format!("{rate:.digits$} {unit}/s")
}

/// Prints a status line unless quiet.
pub fn say(msg: impl AsRef<str>) {
    if quiet() {
        return;
    }
    if json() {
        let v = serde_json::json!({
            "elapsed_s": process_seconds(), "event": "message", "message": msg.as_ref(),
        });
        eprintln!("{v}");
    } else if let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        bar.suspend(|| eprintln!("{}", msg.as_ref()));
    } else {
        eprintln!("{}", msg.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::rate_text;

    #[test]
    fn slow_rates_keep_two_significant_digits() {
        assert_eq!(rate_text(0.48, "passes"), "0.48 passes/s");
        assert_eq!(rate_text(0.0051, "passes"), "0.0051 passes/s");
        assert_eq!(rate_text(2.04, "iterations"), "2.0 iterations/s");
        assert_eq!(rate_text(283.4, "images"), "283 images/s");
        assert_eq!(rate_text(0.0, "images"), "0 images/s");
    }
}
