//! Full-batch L-BFGS with a strong-Wolfe line search, in f64.
//!
//! Our own rather than argmin's: the optimiser state (history pairs, step, counters)
//! must be plain data that a checkpoint can store and restore exactly, and the
//! objective is a fallible streaming pass over a store, not an in-memory function.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// L-BFGS settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LbfgsParams {
    /// Maximum iterations.
    pub max_iter: usize,
    /// History pairs kept.
    pub memory: usize,
    /// Stop when max |g| falls below this.
    pub gtol: f64,
    /// Stop when the relative decrease of f falls below this.
    pub ftol: f64,
    /// Most function evaluations per line search.
    pub max_ls: usize,
}

impl Default for LbfgsParams {
    fn default() -> Self {
        LbfgsParams {
            max_iter: 400,
            memory: 10,
            gtol: 1e-9,
            ftol: 1e-12,
            max_ls: 20,
        }
    }
}

/// Why the optimiser stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stop {
    /// Reached the iteration limit.
    MaxIter,
    /// Gradient small enough.
    GradientTolerance,
    /// Function stopped decreasing.
    FunctionTolerance,
    /// No step along the search direction decreased f enough.
    LineSearchFailed(String),
}

/// Progress after one iteration.
#[derive(Clone, Copy, Debug)]
pub struct Iteration {
    /// Iterations done.
    pub iter: usize,
    /// Function evaluations done.
    pub evals: usize,
    /// Current f.
    pub f: f64,
    /// Current max |g|.
    pub gmax: f64,
}

/// The optimiser's whole state: enough to continue exactly where it was.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LbfgsState {
    /// Current point.
    pub x: Vec<f64>,
    /// f(x).
    pub f: f64,
    /// ∇f(x).
    pub g: Vec<f64>,
    /// History of (s, y) pairs, oldest first.
    pub history: VecDeque<(Vec<f64>, Vec<f64>)>,
    /// Iterations done.
    pub iter: usize,
    /// Evaluations done.
    pub evals: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn gmax(g: &[f64]) -> f64 {
    g.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The function to minimise: value and gradient, or an error that stops the run.
pub type Fg<'a> = dyn FnMut(&[f64]) -> Result<(f64, Vec<f64>)> + 'a;

impl LbfgsState {
    /// Starts at `x0` (one evaluation).
    pub fn start(x0: Vec<f64>, fg: &mut Fg) -> Result<Self> {
        let (f, g) = fg(&x0)?;
        Ok(LbfgsState {
            x: x0,
            f,
            g,
            history: VecDeque::new(),
            iter: 0,
            evals: 1,
        })
    }

    /// Search direction −H·g by the two-loop recursion.
    fn direction(&self) -> Vec<f64> {
        let mut q: Vec<f64> = self.g.iter().map(|v| -v).collect();
        let mut alphas = Vec::with_capacity(self.history.len());
        for (s, y) in self.history.iter().rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push((a, rho));
        }
        if let Some((s, y)) = self.history.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y), (a, rho)) in self.history.iter().zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        q
    }

    /// One iteration; `Some(stop)` when the run is over.
    pub fn step(&mut self, p: &LbfgsParams, fg: &mut Fg) -> Result<Option<Stop>> {
        if gmax(&self.g) <= p.gtol {
            return Ok(Some(Stop::GradientTolerance));
        }
        if self.iter >= p.max_iter {
            return Ok(Some(Stop::MaxIter));
        }
        let mut d = self.direction();
        let mut dg = dot(&d, &self.g);
        if dg >= 0.0 {
            // Not a descent direction (bad curvature pairs): restart from steepest descent.
            self.history.clear();
            d = self.g.iter().map(|v| -v).collect();
            dg = dot(&d, &self.g);
        }
        let t0 = if self.history.is_empty() {
            (1.0 / self.g.iter().map(|v| v.abs()).sum::<f64>()).min(1.0)
        } else {
            1.0
        };
        let ls = line_search(self, &d, dg, t0, p.max_ls, fg)?;
        self.evals += ls.evals;
        let Some((t, f, g)) = ls.accepted else {
            return Ok(Some(Stop::LineSearchFailed(ls.reason)));
        };
        let s: Vec<f64> = d.iter().map(|v| v * t).collect();
        let y: Vec<f64> = g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            if self.history.len() == p.memory {
                self.history.pop_front();
            }
            self.history.push_back((s.clone(), y));
        }
        self.x.iter_mut().zip(&s).for_each(|(x, si)| *x += si);
        let f_old = self.f;
        self.f = f;
        self.g = g;
        self.iter += 1;
        if (f_old - f) <= p.ftol * f_old.abs().max(f.abs()).max(1.0) {
            return Ok(Some(Stop::FunctionTolerance));
        }
        Ok(None)
    }

    /// Progress figures.
    pub fn progress(&self) -> Iteration {
        Iteration {
            iter: self.iter,
            evals: self.evals,
            f: self.f,
            gmax: gmax(&self.g),
        }
    }
}

struct Search {
    accepted: Option<(f64, f64, Vec<f64>)>,
    evals: usize,
    reason: String,
}

/// A trial point: step, f, directional derivative, gradient.
type Trial = (f64, f64, f64, Vec<f64>);

/// Minimiser of the cubic through (a, fa, da) and (b, fb, db), kept inside the
/// middle 80 % of the bracket so the search always makes progress.
fn cubic(a: &Trial, b: &Trial) -> f64 {
    let (lo, hi) = (a.0.min(b.0), a.0.max(b.0));
    let d1 = a.2 + b.2 - 3.0 * (a.1 - b.1) / (a.0 - b.0);
    let rad = d1 * d1 - a.2 * b.2;
    let mut t = if rad >= 0.0 && a.0 != b.0 {
        let d2 = (b.0 - a.0).signum() * rad.sqrt();
        b.0 - (b.0 - a.0) * (b.2 + d2 - d1) / (b.2 - a.2 + 2.0 * d2)
    } else {
        f64::NAN
    };
    if !t.is_finite() {
        t = 0.5 * (lo + hi);
    }
    let w = hi - lo;
    t.clamp(lo + 0.1 * w, hi - 0.1 * w)
}

/// Strong-Wolfe line search (Nocedal & Wright, algorithms 3.5 and 3.6).
fn line_search(
    st: &LbfgsState,
    d: &[f64],
    dg0: f64,
    t0: f64,
    max_evals: usize,
    fg: &mut Fg,
) -> Result<Search> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    let f0 = st.f;
    let mut evals = 0;
    let mut eval = |t: f64, evals: &mut usize| -> Result<Trial> {
        let x: Vec<f64> = st.x.iter().zip(d).map(|(x, di)| x + t * di).collect();
        *evals += 1;
        match fg(&x) {
            Ok((f, g)) => {
                let dg = dot(&g, d);
                Ok((t, f, dg, g))
            }
            // A step into a region where the loss is not finite is too long, not fatal.
            Err(Error::Numeric(_)) => Ok((t, f64::INFINITY, f64::NAN, Vec::new())),
            Err(e) => Err(e),
        }
    };
    let mut best: Option<Trial> = None;
    let keep_best = |tr: &Trial, best: &mut Option<Trial>| {
        if tr.1.is_finite()
            && tr.1 <= f0 + C1 * tr.0 * dg0
            && best.as_ref().is_none_or(|b| tr.1 < b.1)
        {
            *best = Some(tr.clone());
        }
    };
    let mut prev: Trial = (0.0, f0, dg0, st.g.clone());
    let mut t = t0;
    let (mut lo, mut hi);
    loop {
        let cur = eval(t, &mut evals)?;
        keep_best(&cur, &mut best);
        if !cur.1.is_finite() || cur.1 > f0 + C1 * t * dg0 || (evals > 1 && cur.1 >= prev.1) {
            lo = prev;
            hi = cur;
            break;
        }
        if cur.2.abs() <= -C2 * dg0 {
            return Ok(Search {
                accepted: Some((cur.0, cur.1, cur.3)),
                evals,
                reason: String::new(),
            });
        }
        if cur.2 >= 0.0 {
            lo = cur;
            hi = prev;
            break;
        }
        if evals >= max_evals {
            return Ok(finish(
                best,
                evals,
                "no bracket found within the evaluation limit",
            ));
        }
        prev = cur;
        t *= 4.0;
    }
    // Zoom: lo satisfies sufficient decrease and has the lowest f seen in the bracket.
    while evals < max_evals {
        let tj = if hi.1.is_finite() && hi.2.is_finite() {
            cubic(&lo, &hi)
        } else {
            0.5 * (lo.0 + hi.0)
        };
        if (hi.0 - lo.0).abs() < 1e-16 * lo.0.abs().max(1e-300) {
            break;
        }
        let cur = eval(tj, &mut evals)?;
        keep_best(&cur, &mut best);
        if !cur.1.is_finite() || cur.1 > f0 + C1 * tj * dg0 || cur.1 >= lo.1 {
            hi = cur;
        } else {
            if cur.2.abs() <= -C2 * dg0 {
                return Ok(Search {
                    accepted: Some((cur.0, cur.1, cur.3)),
                    evals,
                    reason: String::new(),
                });
            }
            if cur.2 * (hi.0 - lo.0) >= 0.0 {
                hi = lo;
            }
            lo = cur;
        }
    }
    Ok(finish(best, evals, "no step met the curvature condition"))
}

/// Ends a line search that ran out of evaluations: the best sufficient-decrease point
/// if there was one, otherwise a failure with its reason.
fn finish(best: Option<Trial>, evals: usize, why: &str) -> Search {
    match best {
        Some(b) if b.0 > 0.0 => Search {
            accepted: Some((b.0, b.1, b.3)),
            evals,
            reason: String::new(),
        },
        _ => Search {
            accepted: None,
            evals,
            reason: why.to_string(),
        },
    }
}

/// Minimises `fg` from `x0`, calling `progress` after every iteration.
pub fn minimize(
    x0: Vec<f64>,
    p: &LbfgsParams,
    fg: &mut Fg,
    progress: &mut dyn FnMut(&Iteration),
) -> Result<(LbfgsState, Stop)> {
    let mut st = LbfgsState::start(x0, fg)?;
    progress(&st.progress());
    loop {
        if let Some(stop) = st.step(p, fg)? {
            return Ok((st, stop));
        }
        progress(&st.progress());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_rosenbrock() {
        let mut fg = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let (a, b) = (x[0], x[1]);
            let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            Ok((f, g))
        };
        let p = LbfgsParams {
            max_iter: 200,
            ..Default::default()
        };
        let (st, stop) = minimize(vec![-1.2, 1.0], &p, &mut fg, &mut |_| {}).unwrap();
        assert!(st.f < 1e-10, "f = {} ({stop:?})", st.f);
        assert!((st.x[0] - 1.0).abs() < 1e-4 && (st.x[1] - 1.0).abs() < 1e-4);
    }

    #[test]
    fn minimises_a_quadratic_exactly() {
        let c = [1.0, 10.0, 100.0, 3.0];
        let mut fg = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let f = x
                .iter()
                .zip(&c)
                .map(|(v, c)| 0.5 * c * (v - 1.0).powi(2))
                .sum();
            Ok((f, x.iter().zip(&c).map(|(v, c)| c * (v - 1.0)).collect()))
        };
        let (st, _) =
            minimize(vec![0.0; 4], &LbfgsParams::default(), &mut fg, &mut |_| {}).unwrap();
        assert!(st.x.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn reports_line_search_failure_instead_of_looping() {
        // A gradient that lies: it points uphill, so no step decreases f.
        let mut fg = |x: &[f64]| -> Result<(f64, Vec<f64>)> { Ok((x[0], vec![-1.0])) };
        let p = LbfgsParams::default();
        let (_, stop) = minimize(vec![0.0], &p, &mut fg, &mut |_| {}).unwrap();
        assert!(matches!(stop, Stop::LineSearchFailed(_)), "{stop:?}");
    }
}
