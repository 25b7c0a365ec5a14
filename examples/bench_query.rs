//! Times the store queries the analyses stand on, against any store (`--db` value).
//!
//! `cargo run --release --example bench_query -- DB` prints one line per query: rows and seconds.
//! `scored_requests` with the default policy is what `correlate` asks the store for.

#![allow(clippy::print_stdout)] // A benchmark prints its results.

use std::time::Instant;

use anyhow::Result;
use evalloop::feedback::HumanPolicy;
use evalloop::store::{self, Filter, ScoredQuery};

fn main() -> Result<()> {
    let db = std::env::args().nth(1).unwrap_or_else(|| "evalloop.db".into());
    let store = store::open(&db)?;
    let t = Instant::now();
    let rows = store.scored_requests(&ScoredQuery::default())?;
    println!(
        "{} scored_requests (correlate) rows {} secs {:.3}",
        store.backend(),
        rows.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let cs = store.cohort_stats(&Filter::default(), &HumanPolicy::default())?;
    println!("{} cohort_stats rows {} secs {:.3}", store.backend(), cs.len(), t.elapsed().as_secs_f64());
    Ok(())
}
