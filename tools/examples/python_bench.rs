//! Overhead of the sandboxed Python engine: per-call round trip on a warm worker
//! and cold start to the first result, against a bare interpreter start.
//!
//! ```text
//! cargo run --release -p jielong-tools --example python_bench [calls] [starts]
//! ```

use jielong_tools::python::{bench_overhead, PythonSandbox};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let calls = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let starts = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    match bench_overhead(&PythonSandbox::new(), calls, starts).await {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
