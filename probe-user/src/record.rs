//! Recordings: the raw event stream of a run, the backtraces read during it, and what is needed
//! to make sense of both without the target (its task types' names, the run's settings and
//! facts). `probe --record FILE` writes one as the run goes; `async-inspect report FILE` replays
//! it (the `replay` module) through a session exactly as the live run fed its own, so every report
//! and export comes out the same, on any machine.
//!
//! The file is the 8-byte magic [`MAGIC`] followed by one LZ4 frame of items, each a
//! little-endian `u32` length and a postcard-encoded [`Item`]. Events carry their timestamp as a
//! difference from the previous one, so a typical event takes a dozen bytes before compression.
//! The frame's blocks are independent, at most 64 KiB each, and carry a checksum (recordings
//! made before the checksums read the same way, unchecked); the header is a block of its own.
//! A recording cut short (the probe was killed) replays up to where it stops, and a damaged one
//! up to the block where the damage is (`Replayed::damage`).

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use probe_common::EventKind;
use serde::{Deserialize, Serialize};

use crate::{
    analyze::stacks::TaskStack,
    model::{BlockedAt, Coverage, Observed, PollCpu, TaskEvent},
    report::RunFacts,
    resolve::Catalogue,
};

/// The first bytes of every recording; the last three digits are the format version.
pub const MAGIC: &[u8; 8] = b"AIREC002";
/// The first bytes of the recordings of the formats this one extends, which are read too:
/// format 1 had no [`Item::PollEnd`] (poll ends without their CPU time).
const OLDER_MAGICS: [&[u8; 8]; 1] = [b"AIREC001"];

/// A length prefix larger than this is corruption, not an item.
const MAX_ITEM: u32 = 64 << 20;
/// Items up to this size are read into a buffer of their length at once; larger ones as their
/// bytes arrive.
const SMALL_ITEM: u32 = 64 << 10;

mod frame;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write the recording {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not an async-inspect recording (make one with `async-inspect probe --record FILE`)"
    )]
    NotARecording { path: PathBuf },
    #[error(
        "{path} is a recording of format {found}, and this async-inspect reads format {expected}"
    )]
    Version {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} is cut short before its header ends: nothing to replay")]
    CutInHeader { path: PathBuf },
    #[error("{path} is damaged in its header (byte {offset}: {reason}): nothing to replay")]
    DamagedHeader {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path} is damaged at byte {offset} (item {item}): {reason}")]
    Corrupt {
        path: PathBuf,
        /// The item that could not be read, counting from 1 (the header).
        item: u64,
        /// Where in the file: the start of the compressed block the item's bytes came from.
        offset: u64,
        reason: String,
    },
}

/// How the live run's report was made, so a replay makes the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub stuck_after_ns: u64,
    pub long_poll_ns: u64,
    /// No ended task was folded into its type's totals: a replay must fold as the run did.
    #[serde(default)]
    pub keep_every_task: bool,
}

/// What a recording starts with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// The async-inspect that wrote it.
    pub tool: String,
    pub catalogue: Catalogue,
    pub settings: Settings,
    /// The facts known when the run started (its end is in the trailer).
    pub facts: RunFacts,
}

/// One framed item. Rare, nested items are JSON inside, which keeps the frame format simple
/// (postcard cannot skip absent fields or read internally tagged enums).
#[derive(Serialize, Deserialize)]
enum Item {
    Header(String),
    Event(Recorded),
    Stack {
        task: u32,
        stack: String,
    },
    End(String),
    Observed(Observed),
    /// A [`Coverage`] change, as JSON.
    Coverage(String),
    /// Where a task's running poll was seen blocked ([`BlockedAt`], as JSON).
    Blocked {
        task: u32,
        at: String,
    },
    /// A poll end with its CPU time ([`TaskEvent::cpu`], packed as the kernel sends it, its
    /// flags in the event's); since format 2.
    PollEnd {
        event: Recorded,
        cpu: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Recorded {
    /// Nanoseconds since the previous event (negative when a late CPU's batch was older).
    dt: i64,
    kind: u8,
    flags: u8,
    header: u64,
    task_id: Option<u64>,
    vtable: u64,
    other_header: u64,
    value: u64,
    site: u32,
    tid: u32,
}

/// Writes a recording as the run goes. A write error stops the recording (the run goes on) and
/// is reported by [`Recorder::finish`].
pub struct Recorder {
    path: PathBuf,
    out: Option<lz4_flex::frame::FrameEncoder<BufWriter<File>>>,
    last_ts: u64,
    buf: Vec<u8>,
    error: Option<io::Error>,
    pub events: u64,
}

impl Recorder {
    pub fn create(path: &Path, header: &Header) -> Result<Self, RecordError> {
        let write_error = |source| RecordError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = BufWriter::new(File::create(path).map_err(write_error)?);
        file.write_all(MAGIC).map_err(write_error)?;
        let mut recorder = Self {
            path: path.to_owned(),
            out: Some(lz4_flex::frame::FrameEncoder::with_frame_info(
                lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_checksums(true),
                file,
            )),
            last_ts: header.facts.started_ns,
            buf: Vec::with_capacity(128),
            error: None,
            events: 0,
        };
        recorder.item(&Item::Header(to_json(header)));
        // The header in a block of its own, on disk: a recording cut short anywhere later, or
        // damaged past it, still has what a replay needs.
        recorder.flush();
        match recorder.error.take() {
            Some(source) => Err(write_error(source)),
            None => Ok(recorder),
        }
    }

    pub fn event(&mut self, event: &TaskEvent) {
        let dt = event.ts_ns.wrapping_sub(self.last_ts) as i64;
        self.last_ts = event.ts_ns;
        self.events += 1;
        let recorded = Recorded {
            dt,
            kind: event.kind as u8,
            flags: event.flags,
            header: event.header,
            task_id: event.task_id,
            vtable: event.vtable,
            other_header: event.other_header,
            value: event.value,
            site: event.site,
            tid: event.tid,
        };
        self.item(&match event.cpu {
            Some(cpu) => Item::PollEnd {
                event: recorded,
                cpu: cpu.pack(),
            },
            None => Item::Event(recorded),
        });
    }

    pub fn observed(&mut self, found: &Observed) {
        self.item(&Item::Observed(*found));
    }

    pub fn coverage(&mut self, change: &Coverage) {
        self.item(&Item::Coverage(to_json(change)));
    }

    pub fn stack(&mut self, task: usize, stack: &TaskStack) {
        self.item(&Item::Stack {
            task: task as u32,
            stack: to_json(stack),
        });
    }

    pub fn blocked(&mut self, task: usize, at: &BlockedAt) {
        self.item(&Item::Blocked {
            task: task as u32,
            at: to_json(at),
        });
    }

    fn item(&mut self, item: &Item) {
        let Some(out) = &mut self.out else { return };
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        let encoded = postcard::to_extend(item, std::mem::take(&mut self.buf))
            .expect("encoding into a Vec cannot fail");
        self.buf = encoded;
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        if let Err(error) = out.write_all(&self.buf) {
            self.error = Some(error);
            self.out = None;
        }
    }

    /// Writes out what is buffered, so that a probe killed later loses little.
    pub fn flush(&mut self) {
        // The encoder writes its pending block but does not flush the file's buffer.
        if let Some(out) = &mut self.out
            && let Err(error) = out.flush().and_then(|()| out.get_mut().flush())
        {
            self.error = Some(error);
            self.out = None;
        }
    }

    /// Writes the trailer and closes the file.
    pub fn finish(mut self, facts: &RunFacts) -> Result<PathBuf, RecordError> {
        self.item(&Item::End(to_json(facts)));
        let result = match (self.error.take(), self.out.take()) {
            (Some(error), _) => Err(error),
            (None, Some(out)) => out
                .finish()
                .map_err(io::Error::other)
                .and_then(|mut file| file.flush()),
            (None, None) => Ok(()),
        };
        result.map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.path)
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("recording items serialise to JSON")
}

/// What a recording holds, in order.
#[derive(Debug)]
pub enum Entry {
    Event(TaskEvent),
    Observed(Observed),
    Stack(usize, TaskStack),
    /// Boxed: it comes once, and the entries read for every event need not be its size.
    End(Box<RunFacts>),
    Coverage(Coverage),
    Blocked(usize, BlockedAt),
}

/// Reads a recording item by item.
pub struct Reader {
    path: PathBuf,
    input: frame::Blocks<BufReader<File>>,
    pub header: Header,
    last_ts: u64,
    /// The item being read, or last read, counting from 1 (the header).
    item: u64,
    buf: Vec<u8>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let open_error = |source| RecordError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = BufReader::new(File::open(path).map_err(open_error)?);
        let mut magic = Vec::with_capacity(MAGIC.len());
        (&mut file)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut magic)
            .map_err(open_error)?;
        let known = magic.len().min(5);
        if magic[..known] != MAGIC[..known] {
            return Err(RecordError::NotARecording {
                path: path.to_owned(),
            });
        }
        if magic.len() < MAGIC.len() {
            return Err(RecordError::CutInHeader {
                path: path.to_owned(),
            });
        }
        if magic != *MAGIC && !OLDER_MAGICS.iter().any(|older| magic == **older) {
            return Err(RecordError::Version {
                path: path.to_owned(),
                found: String::from_utf8_lossy(&magic[5..]).into_owned(),
                expected: String::from_utf8_lossy(&MAGIC[5..]).into_owned(),
            });
        }
        let mut reader = Self {
            path: path.to_owned(),
            input: frame::Blocks::new(file, MAGIC.len() as u64),
            header: Header {
                tool: String::new(),
                catalogue: Catalogue {
                    task_types: Vec::new(),
                    site_types: Vec::new(),
                    naming: crate::resolve::NamingSource::Labels,
                    has_dwarf: false,
                    notes: Vec::new(),
                },
                settings: Settings {
                    stuck_after_ns: 0,
                    long_poll_ns: 0,
                    keep_every_task: false,
                },
                facts: RunFacts::default(),
            },
            last_ts: 0,
            item: 0,
            buf: Vec::new(),
        };
        let damaged = |reader: &Self, reason: String| RecordError::DamagedHeader {
            path: path.to_owned(),
            offset: reader.input.block_at,
            reason,
        };
        let header = match reader.read_item() {
            Ok(Some(Item::Header(json))) => serde_json::from_str::<Header>(&json)
                .map_err(|error| damaged(&reader, error.to_string()))?,
            Ok(Some(_)) => {
                return Err(damaged(&reader, "it does not start with a header".into()));
            }
            Ok(None) => {
                return Err(RecordError::CutInHeader {
                    path: path.to_owned(),
                });
            }
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(RecordError::CutInHeader {
                    path: path.to_owned(),
                });
            }
            Err(error) => return Err(damaged(&reader, error.to_string())),
        };
        reader.last_ts = header.facts.started_ns;
        reader.header = header;
        Ok(reader)
    }

    /// The next entry; `Ok(None)` at the end of the file, or where it was cut short;
    /// [`RecordError::Corrupt`] where it is damaged.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, RecordError> {
        let item = match self.read_item() {
            Ok(Some(item)) => item,
            // A probe killed mid-write leaves a partial item or frame: replay what came before.
            Ok(None) => return Ok(None),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(self.corrupt(error.to_string())),
        };
        Ok(Some(match item {
            Item::Header(_) => return Err(self.corrupt("a second header".into())),
            Item::Event(recorded) => Entry::Event(self.event(recorded, None)?),
            Item::PollEnd { event, cpu } => {
                let cpu = PollCpu::unpack(event.flags, cpu);
                Entry::Event(self.event(event, cpu)?)
            }
            Item::Observed(found) => Entry::Observed(found),
            Item::Stack { task, stack } => Entry::Stack(task as usize, self.parse_json(&stack)?),
            Item::Coverage(change) => Entry::Coverage(self.parse_json(&change)?),
            Item::Blocked { task, at } => Entry::Blocked(task as usize, self.parse_json(&at)?),
            Item::End(json) => Entry::End(Box::new(self.parse_json(&json)?)),
        }))
    }

    fn read_item(&mut self) -> io::Result<Option<Item>> {
        self.item += 1;
        let mut len = [0u8; 4];
        // End of file exactly between items is the normal end.
        match self.input.read(&mut len[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut len[1..])?,
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_ITEM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an item of {len} bytes"),
            ));
        }
        self.buf.clear();
        if len <= SMALL_ITEM {
            self.buf.resize(len as usize, 0);
            self.input.read_exact(&mut self.buf)?;
        } else {
            // As much as is there, not what the length says: a damaged length allocates little.
            (&mut self.input)
                .take(len.into())
                .read_to_end(&mut self.buf)?;
            if self.buf.len() < len as usize {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        postcard::from_bytes(&self.buf)
            .map(Some)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }

    fn parse_json<T: for<'de> Deserialize<'de>>(&self, json: &str) -> Result<T, RecordError> {
        serde_json::from_str(json).map_err(|error| self.corrupt(error.to_string()))
    }

    /// A recorded event, its time restored from the previous one's.
    fn event(
        &mut self,
        recorded: Recorded,
        cpu: Option<PollCpu>,
    ) -> Result<TaskEvent, RecordError> {
        let ts_ns = self.last_ts.wrapping_add(recorded.dt as u64);
        self.last_ts = ts_ns;
        let kind = EventKind::from_u8(recorded.kind)
            .ok_or_else(|| self.corrupt(format!("unknown event kind {}", recorded.kind)))?;
        Ok(TaskEvent {
            ts_ns,
            kind,
            header: recorded.header,
            task_id: recorded.task_id,
            vtable: recorded.vtable,
            other_header: recorded.other_header,
            value: recorded.value,
            site: recorded.site,
            tid: recorded.tid,
            flags: recorded.flags,
            cpu,
        })
    }

    fn corrupt(&self, reason: String) -> RecordError {
        RecordError::Corrupt {
            path: self.path.clone(),
            item: self.item,
            offset: self.input.block_at,
            reason,
        }
    }
}

/// What the tests of recordings and of their replay make recordings of.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::resolve::{NamingSource, TypeName};

    pub const HDR: u64 = 0x7f00_0000_1000;

    pub fn catalogue() -> Catalogue {
        Catalogue {
            task_types: vec![TypeName {
                name: "app::handler".into(),
                runtime_worker: false,
                spawned_at: Vec::new(),
            }],
            site_types: vec![Some(0), None],
            naming: NamingSource::Dwarf,
            has_dwarf: true,
            notes: vec!["a note".into()],
        }
    }

    pub fn header(started_ns: u64) -> Header {
        Header {
            tool: "test".into(),
            catalogue: catalogue(),
            settings: Settings {
                stuck_after_ns: 5,
                long_poll_ns: 10,
                keep_every_task: false,
            },
            facts: RunFacts {
                target: "/bin/app".into(),
                pid: 42,
                started_ns,
                ended_ns: started_ns,
                ..RunFacts::default()
            },
        }
    }

    pub fn event(ts_ns: u64, kind: EventKind, header: u64, value: u64) -> TaskEvent {
        TaskEvent {
            ts_ns,
            kind,
            header,
            task_id: Some(header >> 8),
            vtable: 0x5000,
            other_header: 0,
            value,
            site: u32::from(matches!(kind, EventKind::Spawn | EventKind::WakeByRef)),
            tid: 7,
            flags: 0,
            cpu: None,
        }
    }

    pub fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("async-inspect-{tag}-{}.airec", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let path = temp("other");
        std::fs::write(&path, b"{\"summary\": {}}").unwrap();
        let not_ours = Reader::open(&path).err().unwrap();
        std::fs::write(&path, b"AIREC999rest").unwrap();
        let newer = Reader::open(&path).err().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(not_ours, RecordError::NotARecording { .. }));
        assert!(matches!(newer, RecordError::Version { ref found, .. } if found == "999"));
        assert!(newer.to_string().contains("format 999"));
        assert!(matches!(
            Reader::open(Path::new("/nonexistent/run.airec")),
            Err(RecordError::Open { .. })
        ));
    }

    #[test]
    fn events_are_compact() {
        let path = temp("size");
        let mut recorder = Recorder::create(&path, &header(0)).unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        for i in 0..100_000u64 {
            recorder.event(&event(
                1_000 + i * 700,
                if i % 2 == 0 {
                    EventKind::PollStart
                } else {
                    EventKind::PollEnd
                },
                HDR + (i % 64) * 0x100,
                0,
            ));
        }
        recorder.finish(&RunFacts::default()).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len() - start;
        std::fs::remove_file(&path).unwrap();
        let per_event = bytes as f64 / 100_000.0;
        // The ring buffer's record is 72 bytes.
        assert!(per_event < 24.0, "{per_event:.1} bytes per event");
    }

    /// A poll end's CPU time replays as it was recorded; a recording of format 1, from before
    /// poll ends had one, still replays, its poll ends without it.
    #[test]
    fn poll_ends_keep_their_cpu_time_and_format_1_still_reads() {
        let path = temp("cpu-time");
        let measured = TaskEvent {
            flags: probe_common::flags::CPU_TIME | probe_common::flags::SAMPLED,
            cpu: Some(PollCpu {
                ns: 1_000_000,
                samples: Some(3),
            }),
            ..event(2_000, EventKind::PollEnd, HDR, 0)
        };
        let written = [event(1_000, EventKind::PollStart, HDR, 0), measured];
        let read_back = |path: &Path| {
            let mut reader = Reader::open(path).unwrap();
            let mut events = Vec::new();
            while let Some(entry) = reader.next_entry().unwrap() {
                if let Entry::Event(event) = entry {
                    events.push(event);
                }
            }
            events
        };
        let mut recorder = Recorder::create(&path, &header(0)).unwrap();
        written.iter().for_each(|event| recorder.event(event));
        recorder.finish(&RunFacts::default()).unwrap();
        assert_eq!(read_back(&path), written);
        let mut recorder = Recorder::create(&path, &header(0)).unwrap();
        recorder.event(&written[0]);
        recorder.finish(&RunFacts::default()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..8].copy_from_slice(b"AIREC001");
        std::fs::write(&path, bytes).unwrap();
        let older = read_back(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(older, written[..1]);
    }
}
