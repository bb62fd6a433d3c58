//! Deliberate defects, compiled in only under `--cfg ingestor_deliberate_bugs` (which only
//! `cargo xtask` sets, for its own build) and switched on only when `INGESTOR_DELIBERATE_BUG` names one: they
//! show that `cargo xtask crashtest --mutants` catches each broken promise.

use std::sync::OnceLock;

/// Whether the deliberate defect `name` is switched on for this process.
pub(crate) fn on(name: &str) -> bool {
    static BUG: OnceLock<Option<String>> = OnceLock::new();
    BUG.get_or_init(|| std::env::var("INGESTOR_DELIBERATE_BUG").ok()).as_deref() == Some(name)
}
