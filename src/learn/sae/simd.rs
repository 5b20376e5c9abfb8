//! Run-time dispatch of elementwise and small-product loops to AVX2 + FMA code.
//!
//! The crate is built for the baseline x86-64 target so that one binary runs on any
//! node of a cluster; the matrix products already pick AVX2/FMA kernels at run time,
//! and [`avx2_or_plain!`](crate::avx2_or_plain) gives the loops around them (sigmoid,
//! codes) the same: the function body is compiled twice, once inside a function with
//! those features enabled, where the compiler vectorises it 8 lanes wide, and that copy
//! runs when the processor has them. The two copies give the same results: the
//! compiler does not fuse separate `*` and `+`. (The classifier's kernels, in
//! `evaluate::linear`, are intrinsics with portable copies of their own.)

/// Whether this processor runs the AVX2 + FMA copies.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Defines `fn name(args) body` whose body runs as AVX2 + FMA code when the processor
/// supports it, and as baseline code otherwise. Helpers it calls are compiled into
/// the fast copy only when they are `#[inline(always)]`.
#[macro_export]
macro_rules! avx2_or_plain {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $body
                if $crate::learn::sae::simd::has_avx2() {
                    // SAFETY: the features were detected on this processor.
                    return unsafe { fast($($arg),*) };
                }
            }
            fn plain($($arg: $ty),*) $body
            plain($($arg),*)
        }
    };
}
