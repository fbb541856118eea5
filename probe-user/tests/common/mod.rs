//! What the integration tests share: where the workspace and the demo fixtures are.

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A demo build under `target/`; `cargo xtask test` makes them all, so a missing one is a
/// setup error, not a skip.
pub fn fixture(relative: &str) -> PathBuf {
    let path = workspace().join("target").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with scripts/test.sh (cargo xtask test builds the fixtures)",
        path.display()
    );
    path
}
