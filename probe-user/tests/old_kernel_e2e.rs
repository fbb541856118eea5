//! async-inspect on the kernels most production fleets run: Debian 12's own kernel (6.1, also
//! what Amazon Linux 2023 runs), booted in qemu with a small initramfs that holds busybox, the
//! tool, a fixture and their shared libraries. `scripts/test.sh` installs qemu and busybox and
//! fetches the kernel package into `target/vm/`. TCG (no KVM: it failed with
//! an emulation error in this nested setup) boots it in about ten seconds.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{fixture, probe_binary, workspace};

/// What the VM runs: start the parked demo, then run each check, printing its output between
/// markers the test reads off the serial console.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo "VM-KERNEL $(cat /proc/sys/kernel/osrelease)"
/opt/inspect-demo --ticks 100000 --tick-ms 200 --block-ms 10 > /tmp/demo.out &
DEMO=$!
sleep 2
echo "VM-BEGIN dump"
/opt/async-inspect dump --pid $DEMO 2>&1
echo "VM-END dump $?"
echo "VM-BEGIN probe"
/opt/async-inspect probe --pid $DEMO --duration 3s --no-tui --stuck-after 1s --json /tmp/probe.json 2>&1
echo "VM-END probe $?"
echo "VM-BEGIN json"
cat /tmp/probe.json 2>&1
echo "VM-END json $?"
poweroff -f
"#;

/// The kernel image `cargo xtask test` unpacked from Debian's package.
fn kernel() -> PathBuf {
    let dir = workspace().join("target/vm");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-6.1"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no Linux 6.1 kernel in {}: run the tests with scripts/test.sh, which fetches it",
                dir.display()
            )
        })
}

/// One file of the initramfs: its path inside, its mode, its bytes.
struct Entry {
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// The initramfs as a `newc` cpio archive (the kernel unpacks it uncompressed).
fn cpio(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer = Entry {
        path: "TRAILER!!!".into(),
        mode: 0,
        data: Vec::new(),
    };
    for (ino, entry) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            ino as u32 + 1,
            entry.mode,
            0,
            0,
            1,
            0,
            entry.data.len() as u32,
            0,
            0,
            0,
            0,
            entry.path.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        out.extend_from_slice(entry.path.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(&entry.data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

const DIR: u32 = 0o040_755;
const EXEC: u32 = 0o100_755;
const LINK: u32 = 0o120_777;

/// Directories, busybox and its applets, the programs and every shared library they load.
fn initramfs(programs: &[(&Path, &str)]) -> Vec<u8> {
    let mut entries: Vec<Entry> = ["bin", "proc", "sys", "dev", "tmp", "opt"]
        .iter()
        .map(|dir| Entry {
            path: (*dir).into(),
            mode: DIR,
            data: Vec::new(),
        })
        .collect();
    let read =
        |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    entries.push(Entry {
        path: "bin/busybox".into(),
        mode: EXEC,
        data: read(Path::new("/bin/busybox")),
    });
    for applet in ["sh", "mount", "sleep", "cat", "echo", "poweroff"] {
        entries.push(Entry {
            path: format!("bin/{applet}"),
            mode: LINK,
            data: b"busybox".to_vec(),
        });
    }
    entries.push(Entry {
        path: "init".into(),
        mode: EXEC,
        data: INIT.as_bytes().to_vec(),
    });
    let mut libraries = std::collections::BTreeSet::new();
    for (program, name) in programs {
        entries.push(Entry {
            path: format!("opt/{name}"),
            mode: EXEC,
            data: read(program),
        });
        libraries.extend(shared_libraries(program));
    }
    let mut dirs = std::collections::BTreeSet::new();
    for library in &libraries {
        let inside = library.trim_start_matches('/');
        let mut dir = Path::new(inside).parent();
        while let Some(parent) = dir.filter(|dir| !dir.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
            dir = parent.parent();
        }
    }
    for dir in dirs {
        entries.push(Entry {
            path: dir,
            mode: DIR,
            data: Vec::new(),
        });
    }
    for library in libraries {
        let data = read(&std::fs::canonicalize(&library).expect("library"));
        entries.push(Entry {
            path: library.trim_start_matches('/').into(),
            mode: EXEC,
            data,
        });
    }
    cpio(&entries)
}

/// The absolute paths `ldd` lists for `program`.
fn shared_libraries(program: &Path) -> Vec<String> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .expect("running ldd");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// Boots the kernel with the initramfs and returns what the serial console printed.
fn boot(kernel: &Path, initramfs: &Path) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-m",
            "1024",
            "-smp",
            "2",
            "-accel",
            "tcg",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting qemu-system-x86_64 (scripts/test.sh installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait().expect("qemu").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().expect("qemu's output");
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

/// The lines between `VM-BEGIN name` and `VM-END name`, and the status after it.
fn section<'a>(console: &'a str, name: &str) -> (&'a str, Option<i32>) {
    let begin = format!("VM-BEGIN {name}\n");
    let end = format!("VM-END {name} ");
    let Some(start) = console.find(&begin).map(|at| at + begin.len()) else {
        return ("", None);
    };
    let Some(stop) = console[start..].find(&end).map(|at| start + at) else {
        return (&console[start..], None);
    };
    let status = console[stop + end.len()..]
        .lines()
        .next()
        .and_then(|word| word.trim().parse().ok());
    (&console[start..stop], status)
}

#[test]
fn dump_and_probe_work_on_linux_6_1() {
    let kernel = kernel();
    let dir = workspace().join("target/vm");
    let image = dir.join("initramfs.cpio");
    let programs = [
        (PathBuf::from(probe_binary()), "async-inspect"),
        (fixture("release-debuginfo/inspect-demo"), "inspect-demo"),
    ];
    let programs: Vec<(&Path, &str)> = programs.iter().map(|(p, n)| (p.as_path(), *n)).collect();
    std::fs::write(&image, initramfs(&programs)).expect("writing the initramfs");
    let console = boot(&kernel, &image);
    assert!(
        console.contains("VM-KERNEL 6.1."),
        "the VM did not boot:\n{console}"
    );

    let (dump, status) = section(&console, "dump");
    assert_eq!(status, Some(0), "dump failed on 6.1:\n{dump}");
    assert!(dump.contains("inspect_demo::lock_waiter"), "{dump}");
    assert!(dump.contains("waiting for a tokio::sync::Mutex"), "{dump}");

    let (probe, status) = section(&console, "probe");
    assert_eq!(status, Some(0), "probe failed on 6.1:\n{probe}");
    assert!(
        probe.contains("perf-event uprobes"),
        "the mechanism is named:\n{probe}"
    );
    let (json, _) = section(&console, "json");
    let report: serde_json::Value = serde_json::from_str(json).expect("the probe's JSON report");
    let tasks = report["tasks"].as_array().expect("tasks");
    let waiter = tasks
        .iter()
        .find(|task| task["name"] == "inspect_demo::lock_waiter")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(waiter["state"], "idle");
    assert!(
        tasks.iter().any(|task| task["polls"].as_u64() > Some(0)),
        "polls are followed on 6.1:\n{probe}\n{json}"
    );
}
