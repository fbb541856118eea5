//! Finding separate debug info, the way gdb does: by build id under `/usr/lib/debug/.build-id/`,
//! then by `.gnu_debuglink` next to the binary, in its `.debug/` directory, and under
//! `/usr/lib/debug/` plus the binary's directory. A candidate is only taken if its build id
//! (or, without one, its debuglink CRC) matches, so a stale file is never used.

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSection as _};

const DEBUG_ROOT: &str = "/usr/lib/debug";

/// The separate debug file for `file` (read from `path`), if one is installed.
pub fn find(path: &Path, file: &object::File<'_>) -> Option<PathBuf> {
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    let mut candidates = Vec::new();
    if let Some(id) = &build_id
        && id.len() >= 2
    {
        let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        candidates.push(
            Path::new(DEBUG_ROOT)
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..])),
        );
    }
    let debuglink = file.gnu_debuglink().ok().flatten();
    if let Some((name, _)) = debuglink {
        let name = Path::new(std::str::from_utf8(name).ok()?);
        let directory = path.parent().unwrap_or(Path::new("."));
        candidates.push(directory.join(name));
        candidates.push(directory.join(".debug").join(name));
        if let Ok(absolute) = std::fs::canonicalize(directory) {
            let relative = absolute.strip_prefix("/").unwrap_or(&absolute);
            candidates.push(Path::new(DEBUG_ROOT).join(relative).join(name));
        }
    }
    candidates
        .into_iter()
        .filter(|candidate| candidate != path && candidate.is_file())
        .find(|candidate| {
            matches(
                candidate,
                build_id.as_deref(),
                debuglink.map(|(_, crc)| crc),
            )
        })
}

fn matches(candidate: &Path, build_id: Option<&[u8]>, crc: Option<u32>) -> bool {
    let Ok(data) = std::fs::read(candidate) else {
        return false;
    };
    let Ok(debug) = object::File::parse(&*data) else {
        return false;
    };
    if debug
        .section_by_name(".debug_info")
        .is_none_or(|s| s.size() == 0)
    {
        return false;
    }
    match (build_id, debug.build_id().ok().flatten()) {
        (Some(expected), Some(found)) => expected == found,
        // `.gnu_debuglink` records the CRC-32 (IEEE) of the whole debug file.
        _ => crc.is_none_or(|crc| crc32fast::hash(&data) == crc),
    }
}
