//! The matrix products under the fused ops, on the `gemm` crate: [`sgemm`] for the linear
//! layers (split over rayon's threads unless [`serial`] says otherwise) and [`small_gemm`] for
//! one attention head on the calling thread.

use candle_core::{Result, bail};

thread_local! {
    /// Set inside [`serial`]: this thread's fused linear layers run their gemm on this thread.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fused linear layers' gemm on the calling thread only, for callers that
/// run several independent batches side by side (data parallelism) instead of splitting each
/// gemm over the threads. Other ops keep their own parallel loops.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&SERIAL, true, f)
}

/// Runs `f` with the thread-local `flag` set to `on`, and its old value back afterwards (also
/// when `f` panics).
pub(super) fn with_flag<R>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    on: bool,
    f: impl FnOnce() -> R,
) -> R {
    struct Reset(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _reset = Reset(flag, flag.with(|c| c.replace(on)));
    f()
}

/// True inside [`serial`].
pub(super) fn is_serial() -> bool {
    SERIAL.with(|c| c.get())
}

fn parallelism() -> gemm::Parallelism {
    if SERIAL.with(|c| c.get()) {
        return gemm::Parallelism::None;
    }
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)`, each operand given by its row
/// and column strides.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) -> Result<()> {
    let span = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    if dst.len() < m * n || lhs.len() < span(m, k, lhs_rs, lhs_cs) || rhs.len() < span(k, n, rhs_rs, rhs_cs) {
        bail!("sgemm: operands too small for {m} x {k} x {n}");
    }
    // SAFETY: the bounds of all three operands were checked above; dst does not alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
    Ok(())
}

/// A matrix operand of [`small_gemm`]: its first element and its row and column strides.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub(super) ptr: *const f32,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

/// `dst (m x n, row stride dst_rs) = lhs (m x k) * rhs (k x n)` on the calling thread.
///
/// # Safety
/// All three operands must be valid for the given sizes and strides; `dst` must not overlap the
/// operands or memory another thread touches.
pub(super) unsafe fn small_gemm((m, n, k): (usize, usize, usize), dst: *mut f32, dst_rs: usize, lhs: Mat, rhs: Mat) {
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
