//! Runtime dispatch to AVX2 builds of the hot loops: the crate is compiled for the x86-64
//! baseline (SSE2, 4 f32 lanes), so a loop body compiled again with AVX2 enabled gets 8 lanes
//! on the CPUs that have it (nearly all), with the same arithmetic in the same order.

/// Defines `fn $name<T: Real>(args) -> R` running `$imp` (an `#[inline(always)]` fn with the
/// same signature) as an AVX2 build when the CPU supports it, the baseline build otherwise.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* fn $name:ident<T: Real>($($a:ident: $t:ty),* $(,)?) -> $r:ty = $imp:ident;) => {
        $(#[$m])*
        fn $name<T: Real>($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<T: Real>($($a: $t),*) -> $r {
                    $imp($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the running CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}
pub(crate) use avx2_dispatch;
