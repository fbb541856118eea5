//! Damaged inputs survive: recordings and binaries mutated at random give a result or a clear
//! error, never a panic, a hang or an allocation beyond a bound, and a damaged recording replays
//! everything before the damage.
//!
//! Deterministic: a small PRNG with fixed seeds, so a failure names the input that caused it and
//! reproduces. Cases run one after another on a worker thread, each under `catch_unwind`, while
//! the test's thread watches for one that does not return; a global allocator notes the largest
//! single allocation each case asks for.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::HashSet,
    fmt::Debug,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use object::{Object as _, ObjectSection as _};
use probe_common::EventKind;
use probe_user::{
    analyze::stacks::TaskStack,
    model::{Coverage, Observed, TaskEvent},
    record::{self, Header, RecordError, Recorder},
    replay::Replayed,
    report::RunFacts,
    resolve::{self, futures::TypeKind},
};

// ---------------------------------------------------------------------------------------------
// The harness.

struct Tracking;

thread_local! {
    /// The largest single allocation made on this thread since the last reset.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| {
        if size > largest.get() {
            largest.set(size);
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// splitmix64: deterministic, and enough to pick places and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A byte to XOR with: never 0, so the byte changes.
    fn flip(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }
}

/// Runs `check` on every case, in order, on a worker thread: each under `catch_unwind`, with
/// at most `per_case` to return and at most `max_alloc` bytes in one allocation. The failures,
/// each naming its case; a case that hangs ends the run (its thread is left behind).
fn run_cases<C, F>(name: &str, cases: Vec<C>, per_case: Duration, max_alloc: usize, check: F)
where
    C: Debug + Send + Sync + 'static,
    F: Fn(&C) -> Result<(), String> + Send + 'static,
{
    let started = Instant::now();
    let total = cases.len();
    let cases = Arc::new(cases);
    let (send, receive) = mpsc::channel();
    {
        let cases = cases.clone();
        std::thread::Builder::new()
            .name(format!("{name}-cases"))
            .stack_size(16 << 20)
            .spawn(move || {
                for (index, case) in cases.iter().enumerate() {
                    LARGEST.set(0);
                    let result = catch_unwind(AssertUnwindSafe(|| check(case)));
                    let largest = LARGEST.get();
                    let result = match result {
                        Ok(Ok(())) if largest > max_alloc => Err(format!(
                            "allocated {largest} bytes at once (bound: {max_alloc})"
                        )),
                        Ok(result) => result,
                        Err(panic) => Err(format!(
                            "panicked: {}",
                            panic
                                .downcast_ref::<String>()
                                .map(String::as_str)
                                .or(panic.downcast_ref::<&str>().copied())
                                .unwrap_or("?")
                        )),
                    };
                    if send.send((index, result)).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread");
    }
    let mut failures = Vec::new();
    let mut done = 0;
    while done < total {
        match receive.recv_timeout(per_case) {
            Ok((index, Err(why))) => {
                failures.push(format!("{:?}: {why}", cases[index]));
                done += 1;
            }
            Ok(_) => done += 1,
            Err(_) => {
                failures.push(format!(
                    "{:?}: no answer within {per_case:?} (a hang?)",
                    cases[done]
                ));
                break;
            }
        }
    }
    eprintln!(
        "{name}: {done} of {total} cases in {:.2?}, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {total} cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

/// A directory for the cases' files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory for the cases' files: in memory where there is a tmpfs for it.
fn scratch(tag: &str) -> Scratch {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "async-inspect-damaged-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    Scratch(dir)
}

// ---------------------------------------------------------------------------------------------
// Recordings.

const HDR: u64 = 0x7f00_0000_1000;
const STARTED_NS: u64 = 1_000;

fn header() -> Header {
    serde_json::from_value(serde_json::json!({
        "tool": "damaged_inputs",
        "catalogue": {
            "task_types": [
                {"name": "app::handler", "runtime_worker": false},
                {"name": "app::worker", "runtime_worker": false},
            ],
            "site_types": [0, 1, null, null],
            "naming": "dwarf",
            "has_dwarf": true,
            "notes": ["a note"],
        },
        "settings": {"stuck_after_ns": 50_000, "long_poll_ns": 20_000},
        "facts": serde_json::to_value(RunFacts {
            target: "/bin/app".into(),
            pid: 42,
            started_ns: STARTED_NS,
            ended_ns: STARTED_NS,
            ..RunFacts::default()
        })
        .unwrap(),
    }))
    .expect("a recording header")
}

fn stack(read_ns: u64) -> TaskStack {
    serde_json::from_value(serde_json::json!({
        "frames": [{
            "function": "app::handler",
            "file": "/src/app/src/main.rs",
            "line": 12,
            "leaf": "sleeping",
        }],
        "read_ns": read_ns,
        "state_word": 0x80,
    }))
    .expect("a stack")
}

/// A small real recording, and where its blocks end.
#[derive(Clone)]
struct Sample {
    bytes: Vec<u8>,
    /// (file length after a flush, entries written by then): block boundaries; the first is
    /// the end of the header's block, the last the end of the file.
    marks: Vec<(usize, u64)>,
}

impl Sample {
    fn entries(&self) -> u64 {
        self.marks.last().expect("marks").1
    }

    /// The entries in the blocks that end at or before `offset`.
    fn entries_before(&self, offset: usize) -> u64 {
        self.marks
            .iter()
            .take_while(|(end, _)| *end <= offset)
            .last()
            .map_or(0, |(_, entries)| *entries)
    }

    /// Where the block holding `offset` starts.
    fn block_start(&self, offset: usize) -> usize {
        self.marks
            .iter()
            .map(|(end, _)| *end)
            .take_while(|end| *end <= offset)
            .last()
            .unwrap_or(0)
    }

    fn header_end(&self) -> usize {
        self.marks[0].0
    }
}

/// Writes a recording of a few tasks' lives through the Recorder, flushing every
/// `flush_every` entries (each flush ends a block).
fn make_sample(path: &Path, events: u64, flush_every: u64) -> Sample {
    let mut recorder = Recorder::create(path, &header()).expect("a recording");
    let len = |path: &Path| std::fs::metadata(path).expect("the recording").len() as usize;
    let mut marks = vec![(len(path), 0)];
    let mut entries = 0;
    let mut ts = STARTED_NS;
    let mut rng = Rng(11);
    for i in 0..events {
        ts += 1 + rng.below(5_000) as u64;
        let task = rng.below(6) as u64;
        let header = HDR + task * 0x100;
        match i % 40 {
            7 => recorder.observed(&Observed {
                header: HDR + 0x10_000 + i,
                task_id: Some(1_000 + i),
                vtable: 0x5000,
                task_type: 1,
                state_word: 3 << probe_common::state::REF_COUNT_SHIFT,
                now_ns: ts,
            }),
            17 => recorder.stack(task as usize, &stack(ts)),
            27 => recorder.coverage(&Coverage::Paused { now_ns: ts }),
            28 => recorder.coverage(&Coverage::Resumed { now_ns: ts }),
            _ => {
                let kind = [
                    EventKind::Spawn,
                    EventKind::PollStart,
                    EventKind::PollEnd,
                    EventKind::WakeByRef,
                    EventKind::WakeByVal,
                    EventKind::PollStart,
                    EventKind::PollEnd,
                    EventKind::Complete,
                    EventKind::Dealloc,
                ][rng.below(9)];
                recorder.event(&TaskEvent {
                    ts_ns: ts,
                    kind,
                    header,
                    task_id: Some(task + 1),
                    vtable: 0x5000,
                    other_header: 0,
                    value: if kind == EventKind::PollEnd && rng.below(4) == 0 {
                        probe_common::state::COMPLETE
                    } else {
                        0
                    },
                    site: (task % 2) as u32,
                    tid: 7,
                    flags: 0,
                    cpu: None,
                });
            }
        }
        entries += 1;
        if entries % flush_every == 0 {
            recorder.flush();
            marks.push((len(path), entries));
        }
    }
    recorder
        .finish(&RunFacts {
            ended_ns: ts + 1_000,
            ..header().facts
        })
        .expect("the recording's end");
    let bytes = std::fs::read(path).expect("the recording");
    marks.push((bytes.len(), entries + 1));
    Sample { bytes, marks }
}

fn replay(path: &Path) -> Result<Replayed<()>, RecordError> {
    probe_user::replay::replay(path, ())
}

/// The sample the recording tests mutate, and the scratch file a case is written to (in
/// the directory returned with it).
fn recording_cases(tag: &str) -> (Sample, PathBuf, Scratch) {
    let dir = scratch(tag);
    let sample = make_sample(&dir.join("sample.airec"), 240, 20);
    assert!(sample.marks.len() > 10, "several blocks");
    (sample, dir.join("case.airec"), dir)
}

/// What a replay must give when the first damage is at `offset` (or a cut there): the entries
/// of the blocks before, at least; exactly those when the damage is certain to be found.
fn check_prefix(
    sample: &Sample,
    offset: usize,
    replayed: &Replayed<()>,
    exact: bool,
) -> Result<(), String> {
    let before = sample.entries_before(sample.block_start(offset));
    if replayed.entries < before {
        return Err(format!(
            "replayed {} entries, but the {before} before the damage are intact",
            replayed.entries
        ));
    }
    if exact && replayed.entries != before {
        return Err(format!(
            "replayed {} entries, expected the {before} before the damage",
            replayed.entries
        ));
    }
    Ok(())
}

#[derive(Debug)]
struct Flip {
    offset: usize,
    xor: u8,
}

#[test]
fn recordings_with_flipped_bytes_replay_up_to_the_damage() {
    let (sample, path, _dir) = recording_cases("flip");
    let mut rng = Rng(1);
    // Every byte once, with a random change.
    let cases: Vec<Flip> = (0..sample.bytes.len())
        .map(|offset| Flip {
            offset,
            xor: rng.flip(),
        })
        .collect();
    let end_mark = sample.bytes.len() - 4;
    run_cases(
        "flip",
        cases,
        Duration::from_secs(5),
        1 << 20,
        move |flip| {
            let mut bytes = sample.bytes.clone();
            bytes[flip.offset] ^= flip.xor;
            std::fs::write(&path, &bytes).unwrap();
            let result = replay(&path);
            if flip.offset < sample.header_end() {
                return match result {
                Err(
                    RecordError::NotARecording { .. }
                    | RecordError::Version { .. }
                    | RecordError::DamagedHeader { .. }
                    // Its block's size word made larger than the file.
                    | RecordError::CutInHeader { .. },
                ) => Ok(()),
                Err(other) => Err(format!("a damaged header gives {other}")),
                Ok(_) => Err("a damaged header replays".into()),
            };
            }
            let replayed = result.map_err(|error| format!("not replayed: {error}"))?;
            if flip.offset >= end_mark {
                // The frame's end mark, past the trailer: everything is there.
                return match replayed.entries == sample.entries() && !replayed.cut_short {
                    true => Ok(()),
                    false => Err(format!("replayed {} entries", replayed.entries)),
                };
            }
            let block = sample.block_start(flip.offset);
            // The checksum covers a block's data, not its size word's "stored uncompressed" bit:
            // with that bit changed, the block's bytes are read as items, unchecked.
            let stored_bit = flip.offset == block + 3 && flip.xor & 0x80 != 0;
            check_prefix(&sample, flip.offset, &replayed, !stored_bit)?;
            if stored_bit {
                return Ok(());
            }
            match &replayed.damage {
                Some(damage) if damage.offset == block as u64 => Ok(()),
                Some(damage) => Err(format!(
                    "the damage is said to be at byte {}, in the block at {block}",
                    damage.offset
                )),
                // A size word made larger than the rest of the file reads as a file cut short.
                None if flip.offset < block + 4 && replayed.cut_short => Ok(()),
                None => Err("the damage is not reported".into()),
            }
        },
    );
}

#[test]
fn recordings_cut_anywhere_replay_their_whole_blocks() {
    let (sample, path, _dir) = recording_cases("cut");
    let cases: Vec<usize> = (0..=sample.bytes.len()).collect();
    let end_mark = sample.bytes.len() - 4;
    run_cases("cut", cases, Duration::from_secs(5), 1 << 20, move |&cut| {
        std::fs::write(&path, &sample.bytes[..cut]).unwrap();
        let result = replay(&path);
        if cut < sample.header_end() {
            return match result {
                Err(RecordError::CutInHeader { .. }) => Ok(()),
                Err(other) => Err(format!("gives {other}")),
                Ok(_) => Err("replays without its header".into()),
            };
        }
        let replayed = result.map_err(|error| format!("not replayed: {error}"))?;
        if replayed.damage.is_some() {
            return Err(format!("damage reported: {:?}", replayed.damage));
        }
        let whole = cut >= end_mark;
        if replayed.cut_short == whole {
            return Err(format!("cut_short: {}", replayed.cut_short));
        }
        let expected = if whole {
            sample.entries()
        } else {
            sample.entries_before(cut)
        };
        match replayed.entries == expected {
            true => Ok(()),
            false => Err(format!(
                "replayed {} entries, expected {expected}",
                replayed.entries
            )),
        }
    });
}

#[derive(Debug)]
enum Splice {
    Insert {
        offset: usize,
        byte: u8,
        count: usize,
    },
    Delete {
        offset: usize,
        count: usize,
    },
}

#[test]
fn recordings_with_bytes_inserted_or_deleted_replay_up_to_the_damage() {
    let (sample, path, _dir) = recording_cases("splice");
    let mut rng = Rng(2);
    let len = sample.bytes.len();
    let cases: Vec<Splice> = (0..1_500)
        .map(|i| {
            let offset = rng.below(len - 4);
            let count = [1, 1, 1, 2, 3, 4, 7, 64][rng.below(8)];
            if i % 2 == 0 {
                Splice::Insert {
                    offset,
                    byte: rng.next() as u8,
                    count,
                }
            } else {
                Splice::Delete { offset, count }
            }
        })
        .collect();
    run_cases(
        "splice",
        cases,
        Duration::from_secs(5),
        1 << 20,
        move |splice| {
            let mut bytes = sample.bytes.clone();
            let offset = match *splice {
                Splice::Insert {
                    offset,
                    byte,
                    count,
                } => {
                    bytes.splice(offset..offset, std::iter::repeat_n(byte, count));
                    offset
                }
                Splice::Delete { offset, count } => {
                    bytes.drain(offset..(offset + count).min(bytes.len()));
                    offset
                }
            };
            std::fs::write(&path, &bytes).unwrap();
            match replay(&path) {
                Ok(replayed) => check_prefix(&sample, offset, &replayed, false),
                Err(_) if offset <= sample.header_end() => Ok(()),
                Err(error) => Err(format!("not replayed: {error}")),
            }
        },
    );
}

/// The items of a recording (the LZ4 frame's content), and the offset in it where each
/// item starts.
fn items_of(sample: &Sample) -> (Vec<u8>, Vec<usize>) {
    let mut stream = Vec::new();
    std::io::Read::read_to_end(
        &mut lz4_flex::frame::FrameDecoder::new(&sample.bytes[record::MAGIC.len()..]),
        &mut stream,
    )
    .expect("a readable frame");
    let mut starts = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        starts.push(at);
        at += 4 + u32::from_le_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
    }
    assert_eq!(at, stream.len());
    (stream, starts)
}

/// A recording holding `stream` as its items, in a frame like the Recorder's, or like the
/// ones written before block checksums.
fn recording_of(stream: &[u8], checksums: bool) -> Vec<u8> {
    let info = if checksums {
        lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_checksums(true)
    } else {
        lz4_flex::frame::FrameInfo::new()
    };
    let mut out = record::MAGIC.to_vec();
    let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut out);
    std::io::Write::write_all(&mut encoder, stream).unwrap();
    encoder.finish().unwrap();
    out
}

#[test]
fn recordings_without_block_checksums_still_replay() {
    let (sample, path, _dir) = recording_cases("old");
    let (stream, _) = items_of(&sample);
    std::fs::write(&path, recording_of(&stream, false)).unwrap();
    let old = replay(&path).expect("a recording without block checksums");
    std::fs::write(&path, &sample.bytes).unwrap();
    let new = replay(&path).unwrap();
    assert_eq!(old.entries, sample.entries());
    assert!(!old.cut_short && old.damage.is_none());
    assert_eq!(old.facts, new.facts);
    assert_eq!(old.session.model.events, new.session.model.events);
}

#[derive(Debug)]
enum ItemDamage {
    /// The length prefix of item `item` (0: the header) set to `len`.
    Length {
        item: usize,
        len: u32,
    },
    Flip {
        offset: usize,
        xor: u8,
    },
    Insert {
        offset: usize,
        bytes: Vec<u8>,
    },
    Delete {
        offset: usize,
        count: usize,
    },
}

/// Damage inside the items, re-framed with valid checksums (as an old recording's damage would
/// reach the item reader): the items before it replay; lengths allocate only what is there.
fn item_damage(checksums: bool) {
    let tag = if checksums { "items" } else { "items-old" };
    let (sample, path, _dir) = recording_cases(tag);
    let (stream, starts) = items_of(&sample);
    let mut rng = Rng(if checksums { 3 } else { 4 });
    let mut cases = Vec::new();
    for item in (0..starts.len()).step_by(7) {
        for len in [
            u32::MAX,
            (64 << 20) + 1,
            64 << 20,
            60 << 20,
            1 << 20,
            70_000,
            0,
        ] {
            cases.push(ItemDamage::Length { item, len });
        }
    }
    for _ in 0..800 {
        let offset = starts[1] + rng.below(stream.len() - starts[1]);
        cases.push(match rng.below(4) {
            0 | 1 => ItemDamage::Flip {
                offset,
                xor: rng.flip(),
            },
            2 => ItemDamage::Insert {
                offset,
                bytes: (0..1 + rng.below(9)).map(|_| rng.next() as u8).collect(),
            },
            _ => ItemDamage::Delete {
                offset,
                count: 1 + rng.below(9),
            },
        });
    }
    let header_item = starts[1];
    run_cases(tag, cases, Duration::from_secs(5), 1 << 20, move |damage| {
        let mut bytes = stream.clone();
        let offset = match damage {
            ItemDamage::Length { item, len } => {
                bytes[starts[*item]..starts[*item] + 4].copy_from_slice(&len.to_le_bytes());
                starts[*item]
            }
            ItemDamage::Flip { offset, xor } => {
                bytes[*offset] ^= xor;
                *offset
            }
            ItemDamage::Insert { offset, bytes: new } => {
                bytes.splice(*offset..*offset, new.iter().copied());
                *offset
            }
            ItemDamage::Delete { offset, count } => {
                bytes.drain(*offset..(*offset + count).min(bytes.len()));
                *offset
            }
        };
        std::fs::write(&path, recording_of(&bytes, checksums)).unwrap();
        let replayed = match replay(&path) {
            Ok(replayed) => replayed,
            Err(RecordError::DamagedHeader { .. } | RecordError::CutInHeader { .. })
                if offset < header_item =>
            {
                return Ok(());
            }
            Err(error) => return Err(format!("not replayed: {error}")),
        };
        // Items wholly before the damage decode as they were.
        let intact = starts.iter().filter(|&&start| start < offset).count() as u64;
        let intact = intact.saturating_sub(2);
        if replayed.entries < intact {
            return Err(format!(
                "replayed {} entries, but the {intact} before the damage are intact",
                replayed.entries
            ));
        }
        // The report is made of whatever was replayed.
        let report = probe_user::report::Report::new(
            &replayed.header.catalogue,
            &replayed.session.model,
            replayed.facts.clone(),
            probe_user::report::Analysis {
                stacks: &replayed.session.stacks,
                stuck_after_ns: replayed.header.settings.stuck_after_ns,
                limits: probe_user::analyze::lints::Thresholds::default(),
            },
        );
        report
            .write_json(&mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if let ItemDamage::Length { item, len } = damage
            && *item > 0
            && (*len as usize) > stream.len()
        {
            // The items before it, and nothing made of the bytes after.
            let before = *item as u64 - 1;
            if replayed.entries != before {
                return Err(format!(
                    "replayed {} entries, not {before}",
                    replayed.entries
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn recordings_with_damaged_items_replay_up_to_the_damage() {
    item_damage(true);
}

#[test]
fn old_recordings_with_damaged_items_replay_up_to_the_damage() {
    item_damage(false);
}

#[test]
fn a_damaged_recording_is_reported_up_to_the_damage() {
    let dir = scratch("cli");
    let path = dir.join("run.airec");
    let sample = make_sample(&path, 2_000, 100);
    let middle = sample.bytes.len() / 2;
    let block = sample.block_start(middle);
    let mut bytes = sample.bytes.clone();
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let report = |path: &Path| {
        Command::new(common::probe_binary())
            .arg("report")
            .arg(path)
            .output()
            .expect("running async-inspect report")
    };
    let output = report(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("is damaged at byte {block} of {}", bytes.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("({} entries:", sample.entries_before(block))),
        "{stderr}"
    );
    assert!(!output.stdout.is_empty(), "the report of the intact part");

    // Cut inside the header: nothing to replay.
    std::fs::write(&path, &sample.bytes[..sample.header_end() - 1]).unwrap();
    let output = report(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("is cut short before its header ends: nothing to replay"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Binaries: resolve() on mutated copies of the demo fixtures.

/// (The names say what was damaged, in a failure's message.)
#[derive(Debug)]
#[allow(dead_code)]
enum Mutation {
    Truncate(usize),
    /// XOR the bytes at these offsets (with what they are paired with).
    Flip(&'static str, Vec<(usize, u8)>),
    /// Zero a section's header.
    ZeroHeader(String),
    /// Zero `len` bytes at an offset.
    Zero(&'static str, usize, usize),
    /// Store `value` in the `width` little-endian bytes at each offset.
    Set {
        what: String,
        offsets: Vec<usize>,
        value: u64,
        width: usize,
    },
}

/// Where things are in a fixture.
struct Anatomy {
    sections: Vec<(String, usize, usize)>,
    /// File offset of each section's header.
    headers: Vec<(String, usize)>,
    /// Where the section header table is, and the size of one entry.
    shoff: usize,
    header_size: usize,
}

fn anatomy(data: &[u8]) -> Anatomy {
    let file = object::File::parse(data).expect("a fixture");
    let sections: Vec<(String, usize, usize)> = file
        .sections()
        .filter_map(|section| {
            let (offset, size) = section.file_range()?;
            Some((
                section.name().ok()?.to_owned(),
                offset as usize,
                size as usize,
            ))
        })
        .collect();
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let header_size = u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()) as usize;
    let headers = file
        .sections()
        .map(|section| {
            (
                section.name().unwrap_or("?").to_owned(),
                shoff + section.index().0 * header_size,
            )
        })
        .collect();
    Anatomy {
        sections,
        headers,
        shoff,
        header_size,
    }
}

impl Anatomy {
    fn section(&self, name: &str) -> Option<(usize, usize)> {
        self.sections
            .iter()
            .find(|(n, _, size)| n == name && *size > 0)
            .map(|&(_, offset, size)| (offset, size))
    }

    /// `count` random flips inside section `name` (or none, without it), all in one case.
    fn flips(&self, rng: &mut Rng, name: &'static str, count: usize) -> Option<Mutation> {
        let (offset, size) = self.section(name)?;
        Some(Mutation::Flip(
            name,
            (0..count)
                .map(|_| (offset + rng.below(size), rng.flip()))
                .collect(),
        ))
    }
}

fn mutate(data: &[u8], anatomy: &Anatomy, mutation: &Mutation) -> Vec<u8> {
    let mut bytes = data.to_vec();
    match mutation {
        Mutation::Truncate(len) => bytes.truncate(*len),
        Mutation::Flip(_, flips) => {
            for &(offset, xor) in flips {
                bytes[offset] ^= xor;
            }
        }
        Mutation::ZeroHeader(name) => {
            let offset = anatomy
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .expect("the section")
                .1;
            bytes[offset..offset + anatomy.header_size].fill(0);
        }
        Mutation::Zero(_, offset, len) => {
            let end = (offset + len).min(bytes.len());
            bytes[*offset..end].fill(0);
        }
        Mutation::Set {
            offsets,
            value,
            width,
            ..
        } => {
            for &offset in offsets {
                bytes[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..*width]);
            }
        }
    }
    bytes
}

/// Extreme values in the fields the resolver computes with: section addresses, offsets and
/// sizes, the ELF header's counts, and the values and sizes of tokio's symbols.
fn extreme_fields(data: &[u8], anatomy: &Anatomy, plan: &resolve::ProbePlan) -> Vec<Mutation> {
    const FIELDS: [(&str, usize); 4] = [
        ("sh_addr", 16),
        ("sh_offset", 24),
        ("sh_size", 32),
        ("sh_entsize", 56),
    ];
    let mut cases = Vec::new();
    let header = |name: &str| anatomy.headers.iter().find(|(n, _)| n == name).map(|h| h.1);
    for (section, fields) in [
        (".text", &FIELDS[..3]),
        (".data.rel.ro", &FIELDS[..3]),
        (".rela.dyn", &FIELDS[1..]),
        (".relr.dyn", &FIELDS[1..3]),
        (".symtab", &FIELDS[1..]),
        (".strtab", &FIELDS[1..3]),
        (".debug_info", &FIELDS[1..3]),
    ] {
        let Some(at) = header(section) else { continue };
        for &(field, offset) in fields {
            for value in [u64::MAX, u64::MAX - 0xfff, 1 << 63] {
                cases.push(Mutation::Set {
                    what: format!("{section} {field}"),
                    offsets: vec![at + offset],
                    value,
                    width: 8,
                });
            }
        }
    }
    for (field, offset, values) in [
        (
            "e_shoff",
            0x28,
            &[u64::MAX - 0x3f, data.len() as u64 - 1][..],
        ),
        ("e_phnum", 0x38, &[0xffff]),
        ("e_shnum", 0x3c, &[0xffff, 1]),
        ("e_shstrndx", 0x3e, &[0xfffe, 0]),
    ] {
        for &value in values {
            cases.push(Mutation::Set {
                what: field.into(),
                offsets: vec![offset],
                value,
                width: if offset == 0x28 { 8 } else { 2 },
            });
        }
    }
    // Every symbol of tokio's functions.
    let file = object::File::parse(data).expect("a fixture");
    let wanted: HashSet<u64> = plan.sites.iter().map(|site| site.address).collect();
    if let Some((symtab, _)) = anatomy.section(".symtab") {
        use object::ObjectSymbol as _;
        let entries: Vec<usize> = file
            .symbols()
            .filter(|symbol| wanted.contains(&symbol.address()))
            .map(|symbol| symtab + symbol.index().0 * 24)
            .collect();
        let text_end = file
            .section_by_name(".text")
            .map_or(0, |text| text.address() + text.size());
        for (field, offset, value) in [
            ("st_value", 8, u64::MAX - 8),
            ("st_value", 8, text_end - 2),
            ("st_value", 8, 0),
            ("st_size", 16, u64::MAX),
            ("st_size", 16, 0),
        ] {
            cases.push(Mutation::Set {
                what: format!("tokio symbols' {field}"),
                offsets: entries.iter().map(|entry| entry + offset).collect(),
                value,
                width: 8,
            });
        }
        // Code at the very top of the address space: decoding runs past its end.
        if let Some(text) = header(".text") {
            let mut offsets: Vec<usize> = entries.iter().map(|entry| entry + 8).collect();
            offsets.push(text + 16);
            for value in [u64::MAX - 0xf, u64::MAX - 0x1000] {
                cases.push(Mutation::Set {
                    what: "tokio symbols' st_value and .text sh_addr".into(),
                    offsets: offsets.clone(),
                    value,
                    width: 8,
                });
            }
        }
    }
    cases
}

/// What resolve gives must be usable: decode the futures' types it found, a few levels deep.
fn exercise(plan: &resolve::ProbePlan) {
    let Some(types) = &plan.types else { return };
    walk_types(
        types,
        plan.task_types
            .iter()
            .filter_map(|task| task.future.map(|future| future.ty))
            .collect(),
    );
}

/// Decodes the types reachable from `queue`, up to a few hundred.
fn walk_types(types: &resolve::futures::TypeIndex, mut queue: Vec<usize>) {
    let mut seen = HashSet::new();
    while let Some(ty) = queue.pop() {
        if seen.len() > 300 || !seen.insert(ty) {
            continue;
        }
        let Ok(info) = types.get(ty) else { continue };
        match &info.kind {
            TypeKind::StateMachine { states, .. } => {
                for state in states {
                    queue.extend(state.awaitee.as_ref().and_then(|member| member.ty));
                    queue.extend(state.locals.iter().filter_map(|member| member.ty));
                }
            }
            TypeKind::Struct { members, variants } => {
                queue.extend(members.iter().filter_map(|member| member.ty));
                if let Some((_, variants)) = variants {
                    queue.extend(variants.iter().filter_map(|variant| variant.ty));
                }
            }
            TypeKind::Pointer { pointee } => queue.extend(*pointee),
            _ => {}
        }
    }
}

type Mutations = fn(&[u8], &Anatomy, &resolve::ProbePlan, &mut Rng) -> Vec<Mutation>;

fn resolve_cases(tag: &str, fixture: &str, mutations: Mutations) {
    resolve_cases_of(tag, fixture, |_, _| {}, mutations);
}

/// [`resolve_cases`] on the fixture as `prepare` leaves it.
fn resolve_cases_of(
    tag: &str,
    fixture: &str,
    prepare: fn(&mut Vec<u8>, &Anatomy),
    mutations: Mutations,
) {
    let mut data = std::fs::read(common::fixture(fixture)).expect("the fixture");
    let anatomy = anatomy(&data);
    prepare(&mut data, &anatomy);
    let dir = scratch(tag);
    let path = dir.join("binary");
    // The intact file resolves.
    std::fs::write(&path, &data).unwrap();
    let plan = resolve::resolve(&path).expect("the fixture resolves");
    exercise(&plan);
    let mut rng = Rng(fixture.len() as u64);
    let cases = mutations(&data, &anatomy, &plan, &mut rng);
    // A bound far above what resolving needs, far below what a length read from the damage
    // could ask for.
    let max_alloc = (data.len() * 4).max(64 << 20);
    run_cases(
        tag,
        cases,
        Duration::from_secs(20),
        max_alloc,
        move |mutation| {
            std::fs::write(&path, mutate(&data, &anatomy, mutation)).unwrap();
            if let Ok(plan) = resolve::resolve(&path) {
                exercise(&plan);
            }
            Ok(())
        },
    );
}

/// Damage anywhere the resolver reads without DWARF: headers, the symbol table, code, the
/// dynamic relocations and the data the vtables are in.
fn elf_mutations(
    data: &[u8],
    anatomy: &Anatomy,
    plan: &resolve::ProbePlan,
    rng: &mut Rng,
) -> Vec<Mutation> {
    let mut cases = Vec::new();
    for len in [0, 3, 4, 16, 52, 63, 64, 100, 4096] {
        cases.push(Mutation::Truncate(len));
    }
    for name in [".symtab", ".strtab", ".text", ".rela.dyn", ".data.rel.ro"] {
        if let Some((offset, size)) = anatomy.section(name) {
            cases.push(Mutation::Truncate(offset + size / 2));
        }
    }
    cases.push(Mutation::Truncate(data.len() - 1));
    let header_end = 64 + 56 * usize::from(u16::from_le_bytes([data[0x38], data[0x39]]));
    for _ in 0..8 {
        cases.push(Mutation::Flip(
            "ELF and program headers",
            vec![(rng.below(header_end), rng.flip())],
        ));
    }
    let first = anatomy.shoff;
    let table_len = anatomy.headers.len() * anatomy.header_size;
    for _ in 0..8 {
        cases.push(Mutation::Flip(
            "section headers",
            (0..2)
                .map(|_| (first + rng.below(table_len), rng.flip()))
                .collect(),
        ));
    }
    for name in [
        ".symtab",
        ".strtab",
        ".rela.dyn",
        ".data.rel.ro",
        ".dynsym",
        ".relr.dyn",
    ] {
        for count in [1, 16] {
            cases.extend(anatomy.flips(rng, name, count));
        }
    }
    for _ in 0..4 {
        cases.extend(anatomy.flips(rng, ".text", 64));
    }
    // The first instructions of tokio's functions: what entry and calls decode.
    let code: Vec<usize> = plan
        .sites
        .iter()
        .map(|site| site.file_offset as usize)
        .collect();
    for chunk in code.chunks(code.len().div_ceil(6).max(1)) {
        cases.push(Mutation::Flip(
            "tokio functions' code",
            chunk
                .iter()
                .map(|&start| (start + rng.below(12), rng.flip()))
                .collect(),
        ));
    }
    for name in [
        ".symtab",
        ".strtab",
        ".text",
        ".shstrtab",
        ".rela.dyn",
        ".data.rel.ro",
    ] {
        if anatomy.headers.iter().any(|(n, _)| n == name) {
            cases.push(Mutation::ZeroHeader(name.to_owned()));
        }
    }
    cases.push(Mutation::Zero("all section headers", first, table_len));
    cases.extend(extreme_fields(data, anatomy, plan));
    cases
}

#[test]
fn binaries_with_damaged_elf_resolve_or_fail_cleanly() {
    resolve_cases("elf", "release/inspect-demo", elf_mutations);
}

/// A non-PIE executable: its pointers are plain words in its data, which the vtable search
/// scans. (Its DWARF hidden, to keep each case short.)
#[test]
fn non_pie_binaries_with_damaged_data_resolve_or_fail_cleanly() {
    resolve_cases_of(
        "elf-nopie",
        "nopie/x86_64-unknown-linux-gnu/release-debuginfo/inspect-demo",
        |data, anatomy| {
            let header = anatomy.headers.iter().find(|(n, _)| n == ".debug_info");
            let at = header.expect(".debug_info").1 + 32;
            data[at..at + 8].fill(0);
        },
        |_, anatomy, _, rng| {
            let mut cases = Vec::new();
            for section in [".data.rel.ro", ".data", ".rodata", ".init_array", ".got"] {
                let Some(&(_, header)) = anatomy.headers.iter().find(|(n, _)| n == section) else {
                    continue;
                };
                for value in [u64::MAX - 3, u64::MAX - 0x100] {
                    cases.push(Mutation::Set {
                        what: format!("{section} sh_addr"),
                        offsets: vec![header + 16],
                        value,
                        width: 8,
                    });
                }
            }
            for section in [".data.rel.ro", ".text", ".symtab"] {
                cases.extend(anatomy.flips(rng, section, 64));
            }
            cases
        },
    );
}

#[test]
fn legacy_binaries_with_damaged_elf_resolve_or_fail_cleanly() {
    resolve_cases("elf-legacy", "legacy/release/inspect-demo", elf_mutations);
}

/// Damage in DWARF: a few places at once per case, as each case reads the whole of it.
#[test]
fn binaries_with_damaged_dwarf_resolve_or_fail_cleanly() {
    resolve_cases(
        "dwarf",
        "release-debuginfo/inspect-demo",
        |_, anatomy, plan, rng| {
            let (info, info_size) = anatomy.section(".debug_info").expect(".debug_info");
            // Around the futures' types: what the type decoder reads.
            let futures: Vec<usize> = plan
                .task_types
                .iter()
                .filter_map(|task| task.future.map(|future| future.ty))
                .collect();
            assert!(!futures.is_empty(), "futures located in the fixture");
            let mut cases = Vec::new();
            for round in 0..4 {
                let mut flips: Vec<(usize, u8)> = futures
                    .iter()
                    .skip(round)
                    .step_by(4)
                    .map(|&ty| (info + ty + rng.below(24), rng.flip()))
                    .collect();
                flips.extend((0..8).map(|_| (info + rng.below(info_size), rng.flip())));
                cases.push(Mutation::Flip(".debug_info", flips));
            }
            for name in [
                ".debug_abbrev",
                ".debug_str",
                ".debug_line",
                ".debug_rnglists",
            ] {
                cases.extend(anatomy.flips(rng, name, 4));
            }
            cases.push(Mutation::Zero(".debug_info's start", info, 64));
            cases.push(Mutation::Set {
                what: ".debug_info sh_size".into(),
                offsets: vec![
                    anatomy
                        .headers
                        .iter()
                        .find(|(n, _)| n == ".debug_info")
                        .unwrap()
                        .1
                        + 32,
                ],
                value: u64::MAX,
                width: 8,
            });
            cases.push(Mutation::ZeroHeader(".debug_abbrev".into()));
            cases.push(Mutation::Truncate(info + info_size / 2));
            cases
        },
    );
}

/// The type decoder on damaged DWARF around the futures' types: many cases, each cheap, as
/// only the units a walk reaches are read.
#[test]
fn damaged_future_types_decode_or_fail_cleanly() {
    let source = common::fixture("release-debuginfo/inspect-demo");
    let plan = resolve::resolve(&source).expect("the fixture resolves");
    let futures: Vec<usize> = plan
        .task_types
        .iter()
        .filter_map(|task| task.future.map(|future| future.ty))
        .collect();
    let data = std::fs::read(&source).expect("the fixture");
    let anatomy = anatomy(&data);
    let (info, info_size) = anatomy.section(".debug_info").expect(".debug_info");
    let mut rng = Rng(5);
    let cases: Vec<Vec<(usize, u8)>> = (0..40)
        .map(|_| {
            (0..1 + rng.below(4))
                .map(|_| {
                    let ty = futures[rng.below(futures.len())];
                    let at = (ty + rng.below(256)).min(info_size - 1);
                    (info + at, rng.flip())
                })
                .collect()
        })
        .collect();
    let data = std::cell::RefCell::new(data);
    run_cases(
        "future types",
        cases,
        Duration::from_secs(20),
        64 << 20,
        move |flips| {
            let mut data = data.borrow_mut();
            for &(offset, xor) in flips {
                data[offset] ^= xor;
            }
            let result = catch_unwind(AssertUnwindSafe(|| {
                let file = object::File::parse(&**data).expect("the fixture parses");
                if let Ok(types) = resolve::futures::TypeIndex::new(&file) {
                    walk_types(&types, futures.clone());
                }
            }));
            for &(offset, xor) in flips {
                data[offset] ^= xor;
            }
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
            Ok(())
        },
    );
}

/// An enum whose discriminant is made to be of the enum's own type: decoding it must stop, not
/// recurse until the stack overflows (which no `catch_unwind` survives), on a thread with the
/// default stack.
#[test]
fn a_type_that_refers_to_itself_is_refused() {
    let source = common::fixture("release-debuginfo/inspect-demo");
    let mut data = std::fs::read(&source).expect("the fixture");
    let (info, _) = anatomy(&data).section(".debug_info").expect(".debug_info");
    // An enum (its .debug_info offset), and where its discriminant's type reference is, with
    // the enum's offset in its unit.
    let (enum_type, position, itself) = {
        let file = object::File::parse(&*data).expect("the fixture parses");
        let load = |id: gimli::SectionId| -> Result<_, gimli::Error> {
            let data = file
                .section_by_name(id.name())
                .and_then(|section| section.uncompressed_data().ok())
                .unwrap_or_default();
            Ok(gimli::EndianRcSlice::new(
                std::rc::Rc::from(&*data),
                gimli::LittleEndian,
            ))
        };
        let dwarf = gimli::Dwarf::load(load).expect("DWARF");
        let mut units = dwarf.units();
        let mut found = None;
        'units: while let Some(header) = units.next().expect("a unit header") {
            let unit = dwarf.unit(header).expect("a unit");
            let mut entries = unit.entries();
            let mut depth = 0isize;
            // Structures by depth, and the discriminant wanted: (its offset, its enum).
            let mut structs: Vec<(isize, gimli::UnitOffset)> = Vec::new();
            let mut wanted = None;
            while let Some((delta, entry)) = entries.next_dfs().expect("an entry") {
                depth += delta;
                structs.retain(|(d, _)| *d < depth);
                match entry.tag() {
                    gimli::DW_TAG_structure_type => structs.push((depth, entry.offset())),
                    gimli::DW_TAG_variant_part => {
                        if let (Some(gimli::AttributeValue::UnitRef(member)), Some(&(_, owner))) = (
                            entry.attr_value(gimli::DW_AT_discr).expect("attributes"),
                            structs.last(),
                        ) {
                            wanted = Some((member, owner));
                        }
                    }
                    gimli::DW_TAG_member => {
                        let Some((member, owner)) = wanted else {
                            continue;
                        };
                        if entry.offset() != member {
                            continue;
                        }
                        let Some(gimli::AttributeValue::UnitRef(target)) =
                            entry.attr_value(gimli::DW_AT_type).expect("attributes")
                        else {
                            continue;
                        };
                        let global = |offset: gimli::UnitOffset| {
                            offset
                                .to_debug_info_offset(&unit.header)
                                .expect("in .debug_info")
                                .0
                        };
                        let at = info + global(member);
                        let Some(position) = data[at..at + 32]
                            .windows(4)
                            .position(|bytes| bytes == (target.0 as u32).to_le_bytes())
                        else {
                            continue;
                        };
                        found = Some((global(owner), at + position, owner.0 as u32));
                        break 'units;
                    }
                    _ => {}
                }
            }
        }
        found.expect("an enum in the fixture's DWARF")
    };
    data[position..position + 4].copy_from_slice(&itself.to_le_bytes());
    let result = std::thread::spawn(move || {
        let file = object::File::parse(&*data).expect("the fixture parses");
        let types = resolve::futures::TypeIndex::new(&file).expect("DWARF types");
        types.get(enum_type).map(|info| info.name.clone())
    })
    .join()
    .expect("no panic");
    // The discriminant's size is read on the way, and its failure ignored: the enum decodes.
    assert!(
        matches!(result, Ok(_) | Err(resolve::futures::TypeError::TooDeep(_))),
        "{result:?}"
    );
}
