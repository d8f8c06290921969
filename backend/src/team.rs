//! Who runs the backend's parallel tasks: the host's OpenMP team when there is
//! one (see [`crate::Omp`]), else llmkernel's rayon pools.

use crate::Omp;
use llmkernel_kernels::matmul::{Parallel, Rayon};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

/// `threads` threads of the host's OpenMP team.
pub struct OmpTeam {
    omp: Omp,
    threads: usize,
}

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    omp: Omp,
    panicked: AtomicBool,
}

/// Runs on every thread of the team: tasks id, id + team size, ...
unsafe extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: data is the Job that OmpTeam::run keeps alive until GOMP_parallel returns.
    let job = unsafe { &*(data as *const Job) };
    // SAFETY: called inside the parallel region GOMP_parallel opened.
    let (id, team) = unsafe { ((job.omp.thread_num)(), (job.omp.num_threads)()) };
    let (mut t, step) = (id.max(0) as usize, team.max(1) as usize);
    while t < job.tasks {
        // A panic must not unwind into C; it is re-raised on the calling thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.f)(t))).is_err() {
            job.panicked.store(true, Ordering::Relaxed);
        }
        t += step;
    }
}

impl OmpTeam {
    /// `threads` threads of the team `omp` runs (the caller among them).
    ///
    /// # Safety
    /// `omp`'s functions are libgomp's `GOMP_parallel`, `omp_get_thread_num`
    /// and `omp_get_num_threads`, loaded for the life of the team.
    pub unsafe fn new(omp: Omp, threads: usize) -> OmpTeam {
        OmpTeam { omp, threads }
    }
}

impl Parallel for OmpTeam {
    fn threads(&self) -> usize {
        self.threads
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.threads <= 1 || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let job = Job {
            f,
            tasks,
            omp: self.omp,
            panicked: AtomicBool::new(false),
        };
        // SAFETY: GOMP_parallel runs run_job on a team of up to `threads`
        // threads (the caller among them) and returns after all finished, so
        // `job` outlives every use.
        unsafe {
            (self.omp.parallel)(
                run_job,
                &job as *const Job as *mut c_void,
                self.threads as u32,
                0,
            )
        };
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a matmul task panicked");
        }
    }
}

/// The runner for `threads` threads: the host's OpenMP team if it has one
/// (unless `LLMKERNEL_OMP=0`), else a rayon pool.
pub fn runner(threads: usize) -> Box<dyn Parallel> {
    static OMP_ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let allowed =
        *OMP_ALLOWED.get_or_init(|| std::env::var_os("LLMKERNEL_OMP").is_none_or(|v| v != "0"));
    match crate::host().omp.filter(|_| allowed) {
        Some(omp) => Box::new(OmpTeam { omp, threads }),
        None => Box::new(Rayon(threads)),
    }
}
