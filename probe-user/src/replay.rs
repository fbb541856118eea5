//! Playing a recording back: every event and backtrace of a recording ([`crate::record`]) fed
//! to a new [`Session`] as the live run fed its own, so the same reports and exports come out.

use std::path::Path;

use crate::{
    record::{Entry, Header, Reader, RecordError},
    report::RunFacts,
    session::{Observer, Session},
};

/// Where a recording stops being readable: [`replay`] plays everything before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The item that could not be read, counting from 1 (the header).
    pub item: u64,
    /// Byte offset in the file of the compressed block where the damage is.
    pub offset: u64,
    pub reason: String,
}

/// A recording played back into a session.
pub struct Replayed<O> {
    pub header: Header,
    pub session: Session<O>,
    /// The run's facts: from the trailer, or, for a recording cut short, up to its last event.
    pub facts: RunFacts,
    /// The recording ended without its trailer.
    pub cut_short: bool,
    /// Where the recording is damaged: what follows was not replayed.
    pub damage: Option<Damage>,
    /// The entries replayed (the header aside).
    pub entries: u64,
    /// The recording's size in bytes.
    pub file_len: u64,
}

impl<O> Replayed<O> {
    /// What to tell a user about a replay that did not reach the recording's end, if it did not.
    pub fn note(&self, path: &Path) -> Option<String> {
        let replayed = format!(
            "{} entries: {} events, the first {} of the run",
            self.entries,
            self.session.model.events,
            crate::readable::duration(
                self.facts
                    .ended_ns
                    .saturating_sub(self.header.facts.started_ns)
            ),
        );
        match &self.damage {
            Some(damage) => Some(format!(
                "{} is damaged at byte {} of {} (item {}: {}): the report covers what precedes \
                 the damage ({replayed})",
                path.display(),
                damage.offset,
                self.file_len,
                damage.item,
                damage.reason,
            )),
            None if self.cut_short => Some(format!(
                "{} ends without its trailer (the probe was killed?): reporting what it holds \
                 ({replayed})",
                path.display(),
            )),
            None => None,
        }
    }
}

/// Feeds every event and backtrace of the recording at `path` to a new session, as the live run
/// did, and closes it at the run's end.
pub fn replay<O: Observer>(path: &Path, observer: O) -> Result<Replayed<O>, RecordError> {
    let mut reader = Reader::open(path)?;
    let mut session = Session::new(
        &reader.header.catalogue,
        observer,
        reader.header.settings.keep_every_task,
    );
    let mut facts = None;
    let mut damage = None;
    let mut entries = 0;
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            // Everything before the damage is replayed; nothing after it can be trusted.
            Err(RecordError::Corrupt {
                item,
                offset,
                reason,
                ..
            }) => {
                damage = Some(Damage {
                    item,
                    offset,
                    reason,
                });
                break;
            }
            Err(error) => return Err(error),
        };
        entries += 1;
        match entry {
            Entry::Event(event) => session.event(&event),
            Entry::Observed(found) => {
                session.observe(found);
            }
            Entry::Stack(task, stack) => session.stack(task, stack),
            Entry::Coverage(change) => session.coverage(change),
            Entry::Blocked(task, at) => session.blocked(task, at),
            Entry::End(end) => facts = Some(*end),
        }
    }
    let cut_short = facts.is_none();
    let facts = facts.unwrap_or_else(|| RunFacts {
        ended_ns: session.model.last_ns.max(reader.header.facts.started_ns),
        ..reader.header.facts.clone()
    });
    session.model.close(facts.ended_ns);
    Ok(Replayed {
        header: reader.header,
        session,
        facts,
        cut_short,
        damage,
        entries,
        file_len: std::fs::metadata(path).map_or(0, |metadata| metadata.len()),
    })
}

#[cfg(test)]
mod tests {
    use probe_common::EventKind;

    use super::*;
    use crate::{
        analyze::{backtrace::Frame, lints::Thresholds, stacks::TaskStack},
        model::{BlockedAt, Observed, TaskEvent, TaskState},
        record::{Recorder, testing::*},
        report::{Analysis, Report},
    };

    /// A run with spawns, polls, wakes, a completion, a backtrace, and a timestamp that goes
    /// back (a late CPU's batch).
    fn run(session: &mut Session) {
        let second = HDR + 0x100;
        // Idle since before the probe: found in memory, then never heard from.
        session.observe(Observed {
            header: HDR + 0x200,
            task_id: Some(99),
            vtable: 0x5000,
            task_type: 0,
            state_word: 3 << probe_common::state::REF_COUNT_SHIFT,
            now_ns: 990,
        });
        for event in [
            event(1_000, EventKind::Spawn, HDR, 0),
            event(1_010, EventKind::PollStart, HDR, 0),
            event(1_050, EventKind::PollEnd, HDR, 0),
            event(1_040, EventKind::Spawn, second, 0),
            event(1_100, EventKind::WakeByRef, HDR, 0),
            event(1_200, EventKind::PollStart, HDR, 0),
        ] {
            session.event(&event);
        }
        session.blocked(1, blocked_at());
        for event in [
            TaskEvent {
                // Blocked in the kernel for the whole poll.
                other_header: probe_common::off_cpu::pack(1_000, 0),
                ..event(1_300, EventKind::PollEnd, HDR, 0)
            },
            event(1_400, EventKind::PollStart, second, 0),
            event(
                1_450,
                EventKind::PollEnd,
                second,
                probe_common::state::COMPLETE,
            ),
        ] {
            session.event(&event);
        }
        session.stack(
            0,
            TaskStack {
                frames: vec![Frame {
                    function: "app::handler".into(),
                    file: Some("/src/app/src/main.rs".into()),
                    line: Some(12),
                    leaf: Some("sleeping".into()),
                    locals: Box::default(),
                    holds: Box::default(),
                    waits_on: None,
                    bound: None,
                }]
                .into(),
                read_ns: 1_310,
                state_word: Some(0x80),
                missing: None,
            },
        );
    }

    fn blocked_at() -> BlockedAt {
        BlockedAt {
            doing: crate::model::Doing::Blocked,
            frames: vec![crate::model::NativeFrame {
                function: Some("app::handler".into()),
                file: Some("/src/app/src/main.rs".into()),
                line: Some(14),
            }],
        }
    }

    fn json(session: &Session, facts: RunFacts) -> String {
        let report = Report::new(
            &catalogue(),
            &session.model,
            facts,
            Analysis {
                stacks: &session.stacks,
                stuck_after_ns: 5,
                limits: Thresholds::default(),
            },
        );
        let mut out = Vec::new();
        report.write_json(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_replay_gives_the_live_report() {
        let path = temp("roundtrip");
        let mut live = Session::new(&catalogue(), (), false);
        live.record_to(Recorder::create(&path, &header(900)).unwrap());
        run(&mut live);
        let facts = RunFacts {
            ended_ns: 2_000,
            dropped_per_cpu: vec![0, 3],
            // A figure that serde_json's default, faster float parsing reads back one bit off
            // (seen in a CI run).
            overhead: Some(crate::overhead::Overhead {
                share_percent: 1635.4147000499133,
                ..Default::default()
            }),
            ..header(900).facts
        };
        live.model.close(facts.ended_ns);
        live.take_recorder().unwrap().finish(&facts).unwrap();

        let replayed = replay(&path, ()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!replayed.cut_short);
        assert_eq!(replayed.facts, facts);
        assert_eq!(replayed.header.catalogue, catalogue());
        assert_eq!(replayed.session.model.events, 9);
        assert_eq!(replayed.session.model.tasks().len(), 3);
        assert_eq!(
            replayed.session.model.tasks()[1]
                .stats()
                .blocked_at
                .as_deref(),
            Some(&blocked_at())
        );
        assert_eq!(
            json(&replayed.session, replayed.facts),
            json(&live, facts),
            "the replayed report differs from the live one"
        );
    }

    /// The per-poll probes detach at 2 000, while a poll that started at 1 990 is still in a
    /// ring: the pause waits for it, so the poll does not stay running through the gap, live or
    /// replayed.
    #[test]
    fn a_pause_applies_after_the_events_stamped_before_it() {
        let path = temp("pause");
        let mut live = Session::new(&catalogue(), (), false);
        live.record_to(Recorder::create(&path, &header(900)).unwrap());
        live.event(&event(1_000, EventKind::Spawn, HDR, 0));
        live.pause_at(2_000);
        live.event(&event(1_990, EventKind::PollStart, HDR, 0));
        assert_eq!(live.model.tasks()[0].state, TaskState::Running);
        live.settle(2_001);
        assert_eq!(live.model.tasks()[0].state, TaskState::Scheduled);
        assert_eq!(
            live.model.polls_running().count(),
            0,
            "no poll left running"
        );
        live.take_recorder()
            .unwrap()
            .finish(&header(900).facts)
            .unwrap();
        let replayed = replay(&path, ()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            replayed.session.model.tasks()[0].state,
            TaskState::Scheduled
        );
        assert_eq!(replayed.session.model.polls_running().count(), 0);
    }

    #[test]
    fn a_recording_cut_short_replays_what_it_holds() {
        let path = temp("cut");
        let mut live = Session::new(&catalogue(), (), false);
        live.record_to(Recorder::create(&path, &header(900)).unwrap());
        run(&mut live);
        live.recorder().unwrap().flush();
        let flushed = std::fs::metadata(&path).unwrap().len() as usize;
        for i in 0..1_000 {
            live.event(&event(2_000 + i, EventKind::WakeByRef, HDR, 0));
        }
        live.take_recorder()
            .unwrap()
            .finish(&header(900).facts)
            .unwrap();
        // A probe killed after the flush, in the middle of writing what followed.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..flushed + (bytes.len() - flushed) / 2]).unwrap();
        let replayed = replay(&path, ());
        std::fs::remove_file(&path).unwrap();
        let replayed = replayed.unwrap();
        assert!(replayed.cut_short);
        assert!(replayed.session.model.events >= 9);
        assert!(replayed.session.model.events < 1_009);
        assert_eq!(
            replayed.session.stacks.get(0).map(|s| s.read_ns),
            Some(1_310)
        );
        assert_eq!(replayed.facts.ended_ns, replayed.session.model.last_ns);
    }

    #[test]
    fn a_damaged_recording_replays_up_to_the_damage_and_says_where() {
        let path = temp("damaged");
        let mut recorder = Recorder::create(&path, &header(900)).unwrap();
        let header_end = std::fs::metadata(&path).unwrap().len() as usize;
        for i in 0..100 {
            recorder.event(&event(1_000 + i * 1_000, EventKind::WakeByRef, HDR, 0));
        }
        recorder.flush();
        let intact = std::fs::metadata(&path).unwrap().len();
        for i in 100..200 {
            recorder.event(&event(1_000 + i * 1_000, EventKind::WakeByRef, HDR, 0));
        }
        recorder.finish(&header(900).facts).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[intact as usize + 10] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let replayed = replay(&path, ()).unwrap();
        std::fs::write(&path, &bytes[..header_end - 1]).unwrap();
        let cut = Reader::open(&path).err().unwrap();
        bytes[header_end - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let damaged_header = Reader::open(&path).err().unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!(replayed.entries, 100);
        assert_eq!(replayed.session.model.events, 100);
        assert!(replayed.cut_short);
        let reason = "the block's checksum does not match";
        assert_eq!(
            replayed.damage,
            Some(Damage {
                item: 102,
                offset: intact,
                reason: reason.into(),
            })
        );
        assert_eq!(
            replayed.note(Path::new("run.airec")).unwrap(),
            format!(
                "run.airec is damaged at byte {intact} of {} (item 102: {reason}): the report \
                 covers what precedes the damage (100 entries: 100 events, the first 99.1us of \
                 the run)",
                bytes.len()
            )
        );
        assert!(matches!(cut, RecordError::CutInHeader { .. }));
        assert!(
            cut.to_string()
                .ends_with("is cut short before its header ends: nothing to replay")
        );
        assert!(
            matches!(damaged_header, RecordError::DamagedHeader { offset, .. } if offset == 15),
            "{damaged_header}"
        );
    }
}
