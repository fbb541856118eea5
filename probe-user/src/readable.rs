//! Times and source places as a person reads them, the same in analyses, reports and views.

/// `src/db.rs:88`: a source location, shortened to the path from the crate's `src/` where
/// there is one.
pub fn location(file: Option<&str>, line: Option<u64>) -> String {
    let file = file.unwrap_or("?");
    let short = match file.rfind("/src/") {
        Some(at) => {
            let crate_start = file[..at].rfind('/').map_or(0, |slash| slash + 1);
            &file[crate_start..]
        }
        None => file,
    };
    match line {
        Some(line) => format!("{short}:{line}"),
        None => short.to_owned(),
    }
}

/// Human durations: `812ns`, `4.1us`, `12.3ms`, `2.05s`.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_shortened_to_the_crate() {
        assert_eq!(
            location(Some("/work/app/demo/src/main.rs"), Some(12)),
            "demo/src/main.rs:12"
        );
        assert_eq!(
            location(
                Some(
                    "/root/.cargo/registry/src/index.crates.io-1949cf/tokio-1.54.1/src/sync/mutex.rs"
                ),
                Some(3)
            ),
            "tokio-1.54.1/src/sync/mutex.rs:3"
        );
        assert_eq!(location(None, None), "?");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(812), "812ns");
        assert_eq!(duration(4_100), "4.1us");
        assert_eq!(duration(12_300_000), "12.3ms");
        assert_eq!(duration(2_050_000_000), "2.05s");
    }
}
