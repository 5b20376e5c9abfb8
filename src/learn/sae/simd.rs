//! Runtime dispatch of elementwise loops to AVX2 + FMA code.
//!
//! The crate is built for the baseline x86-64 target so that one binary runs on any
//! node of a cluster; the matrix products already pick AVX2/FMA kernels at run time,
//! and these helpers give the loops around them (sigmoid, derivatives, column sums) the
//! same: the closure is compiled a second time inside a function with those features
//! enabled, where the compiler vectorises it 8 lanes wide, and that copy runs when the
//! processor has them. Results are the same either way up to the rounding of FMA
//! contraction, which the compiler does not apply to separate `*` and `+`.

/// Runs `f(arg)`, in an AVX2 + FMA compiled copy when the processor supports it.
#[inline(always)]
pub fn dispatch<A, R>(arg: A, f: impl FnOnce(A) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected on this processor.
            return unsafe { avx2(arg, f) };
        }
    }
    f(arg)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2<A, R>(arg: A, f: impl FnOnce(A) -> R) -> R {
    f(arg)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}
