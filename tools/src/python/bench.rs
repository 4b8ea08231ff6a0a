//! Measuring the engine's own costs.

use std::fmt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::PythonError;
use super::interp;
use super::session::{PythonSession, SandboxLayers};
use super::PythonSandbox;

/// Figures measured by [`bench_overhead`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Calls measured on one persistent worker.
    pub calls: usize,
    /// Median round trip of `print(1)` on a warm worker.
    pub per_call_median: Duration,
    /// 90th percentile of the same.
    pub per_call_p90: Duration,
    /// Cold starts measured.
    pub starts: usize,
    /// Median time from [`PythonSession::start`] to the first `print(1)` result
    /// (interpreter already resolved).
    pub cold_start_median: Duration,
    /// Median of `python3 -I -S -c pass` on the same interpreter, unsandboxed.
    pub bare_python_median: Duration,
    /// CPU time (this process and its reaped children) per cold start, mean: less
    /// sensitive than wall time to other load on the machine.
    pub cold_start_cpu: Duration,
    /// CPU time per bare interpreter start, mean.
    pub bare_python_cpu: Duration,
    /// The sandbox's layers during the measurement.
    pub layers: SandboxLayers,
}

impl BenchReport {
    /// Cold start divided by the bare interpreter start (wall-time medians).
    pub fn cold_start_ratio(&self) -> f64 {
        self.cold_start_median.as_secs_f64() / self.bare_python_median.as_secs_f64().max(1e-9)
    }

    /// The same ratio in CPU time.
    pub fn cold_start_cpu_ratio(&self) -> f64 {
        self.cold_start_cpu.as_secs_f64() / self.bare_python_cpu.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(f, "layers: {}", self.layers)?;
        writeln!(
            f,
            "per call (print(1), {} calls): median {:.3} ms, p90 {:.3} ms",
            self.calls,
            ms(self.per_call_median),
            ms(self.per_call_p90)
        )?;
        writeln!(
            f,
            "cold start to first result ({} starts): median {:.2} ms; `python -I -S -c pass`: \
             median {:.2} ms; ratio {:.2}x",
            self.starts,
            ms(self.cold_start_median),
            ms(self.bare_python_median),
            self.cold_start_ratio()
        )?;
        write!(
            f,
            "CPU per start: {:.2} ms vs {:.2} ms; ratio {:.2}x",
            ms(self.cold_start_cpu),
            ms(self.bare_python_cpu),
            self.cold_start_cpu_ratio()
        )
    }
}

/// CPU time used so far by this process and its reaped children.
fn cpu_used() -> Duration {
    let tv =
        |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills a zeroed local struct.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            total += tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    total
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// Measures the per-call overhead of a warm worker (`calls` round trips of
/// `print(1)`), and the cold start of a sandboxed session to its first result
/// against a bare `python -I -S -c pass` (`starts` of each).
pub async fn bench_overhead(
    config: &PythonSandbox,
    calls: usize,
    starts: usize,
) -> Result<BenchReport, PythonError> {
    let python = config.python.clone();
    let interpreter = tokio::task::spawn_blocking(move || interp::resolve(&python))
        .await
        .map_err(|e| PythonError::Crashed {
            detail: format!("an engine task failed: {e}"),
        })??;

    // Bare and sandboxed starts alternate, so that load from elsewhere on the
    // machine affects both alike; a short pause lets the kernel finish tearing
    // down the previous session's namespaces.
    let n = starts.max(1);
    let mut bare = Vec::with_capacity(n);
    let mut cold = Vec::with_capacity(n);
    let mut layers = None;
    let (mut bare_cpu, mut cold_cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let exe = interpreter.exe.clone();
        let cpu = cpu_used();
        let took = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            Command::new(&exe)
                .args(["-I", "-S", "-c", "pass"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .map(|_| t.elapsed())
        })
        .await
        .map_err(|e| PythonError::Crashed {
            detail: format!("an engine task failed: {e}"),
        })?;
        bare.extend(took);
        bare_cpu += cpu_used().saturating_sub(cpu);
        tokio::time::sleep(Duration::from_millis(20)).await;

        let cpu = cpu_used();
        let t = Instant::now();
        let mut session = PythonSession::start(config.clone()).await?;
        session.run("print(1)").await?;
        cold.push(t.elapsed());
        layers.get_or_insert_with(|| session.layers().clone());
        drop(session);
        cold_cpu += cpu_used().saturating_sub(cpu);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut session = PythonSession::start(config.clone()).await?;
    for _ in 0..10 {
        session.run("print(1)").await?;
    }
    let mut per_call = Vec::with_capacity(calls);
    for _ in 0..calls.max(1) {
        let t = Instant::now();
        session.run("print(1)").await?;
        per_call.push(t.elapsed());
    }
    Ok(BenchReport {
        calls: per_call.len(),
        per_call_median: median(per_call.clone()),
        per_call_p90: percentile(per_call, 0.9),
        starts: n,
        cold_start_median: median(cold),
        bare_python_median: median(bare),
        cold_start_cpu: cold_cpu / n as u32,
        bare_python_cpu: bare_cpu / n as u32,
        layers: layers.unwrap_or_else(|| session.layers().clone()),
    })
}
