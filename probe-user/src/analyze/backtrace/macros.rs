//! `tokio::select!`, `join!` and `try_join!`: the await they expand to polls a closure over a
//! tuple of the branches' futures, kept in the user's async fn. Their frame sums up the branches
//! still pending, from the state each macro keeps: `select!`'s `disabled` bit mask (a bit per
//! branch that completed or was switched off), `join!`'s `MaybeDone` per branch.

use super::{Bound, Frame, Walker, intern, timers};
use crate::resolve::futures::{Member, TypeInfo, TypeKind};

/// How many `select!`s and `join!`s deep a branch is still walked into: damaged memory must not
/// nest them without end.
const MAX_NESTING: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokioMacro {
    Select,
    Join,
    TryJoin,
}

impl TokioMacro {
    /// The macro whose source `file` (a suspend state's DW_AT_decl_file) is.
    pub(super) fn of(file: &str) -> Option<Self> {
        if !file.contains("tokio") {
            return None;
        }
        [
            ("/src/macros/select.rs", Self::Select),
            ("/src/macros/join.rs", Self::Join),
            ("/src/macros/try_join.rs", Self::TryJoin),
        ]
        .into_iter()
        .find(|(tail, _)| file.ends_with(tail))
        .map(|(_, which)| which)
    }

    /// Leaves out of a frame's locals the macro's own (its branches' tuple, its masks), which
    /// its frame sums up.
    pub(super) fn hide_locals(self, locals: &mut Box<[super::Local]>) {
        const OWN: [&str; 6] = [
            "futures",
            "futures_init",
            "disabled",
            "output",
            "rotator",
            "skip_next_time",
        ];
        let mut kept = std::mem::take(locals).into_vec();
        kept.retain(|local| !OWN.contains(&&*local.name));
        *locals = kept.into_boxed_slice();
    }

    fn name(self) -> &'static str {
        match self {
            Self::Select => "tokio::select!",
            Self::Join => "tokio::join!",
            Self::TryJoin => "tokio::try_join!",
        }
    }
}

/// One branch of a `select!` or `join!`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Branch {
    pub pending: bool,
    /// Its future and what that waits for: `tokio::sync::oneshot::Receiver<u32> (waiting for a
    /// oneshot value)`.
    pub what: String,
    pub bound: Option<Box<Bound>>,
}

impl Branch {
    fn done() -> Self {
        Self {
            pending: false,
            what: String::new(),
            bound: None,
        }
    }
}

/// A `join!` branch's `MaybeDone`.
enum Slot {
    /// Still the future, at this address and of this type.
    Pending(u64, usize),
    Done,
    Unknown,
}

impl Walker<'_> {
    /// The frame of a `select!` or `join!` whose `poll_fn` future of type `awaited` is at
    /// `address`: its branches, and the timer among them that ends the wait, if any.
    pub(super) fn macro_frame(
        &self,
        which: TokioMacro,
        address: u64,
        awaited: &TypeInfo,
        nesting: usize,
    ) -> Frame {
        let branches = match which {
            TokioMacro::Select => self.select_branches(address, awaited, nesting),
            TokioMacro::Join | TokioMacro::TryJoin => self.join_branches(address, awaited, nesting),
        };
        Frame {
            function: intern(which.name()),
            leaf: branches
                .as_deref()
                .map(|branches| summary(which, branches).into()),
            bound: branches
                .as_deref()
                .and_then(|branches| bound(which, branches)),
            ..Frame::default()
        }
    }

    fn select_branches(
        &self,
        address: u64,
        awaited: &TypeInfo,
        nesting: usize,
    ) -> Option<Vec<Branch>> {
        let (futures, tuple) = self.captured(address, awaited, "futures")?;
        let (mask, mask_type) = self.captured(address, awaited, "disabled")?;
        let disabled = self.read_uint(mask, self.types.get(mask_type).ok()?.size)?;
        let branches = self.tuple_members(tuple)?.into_iter().enumerate();
        Some(
            branches
                .map(|(index, member)| {
                    let done = index < 64 && disabled >> index & 1 == 1;
                    match member.ty {
                        Some(ty) if !done => self.branch(futures + member.offset, ty, nesting),
                        _ => Branch::done(),
                    }
                })
                .collect(),
        )
    }

    fn join_branches(
        &self,
        address: u64,
        awaited: &TypeInfo,
        nesting: usize,
    ) -> Option<Vec<Branch>> {
        let (futures, tuple) = self.captured(address, awaited, "futures")?;
        let branches = self.tuple_members(tuple)?.into_iter();
        Some(
            branches
                .map(|member| {
                    let slot = member.ty.map_or(Slot::Unknown, |ty| {
                        self.maybe_done(futures + member.offset, ty)
                    });
                    match slot {
                        Slot::Pending(future, ty) => self.branch(future, ty, nesting),
                        Slot::Done => Branch::done(),
                        Slot::Unknown => Branch {
                            pending: true,
                            what: "(a future whose state could not be read)".into(),
                            bound: None,
                        },
                    }
                })
                .collect(),
        )
    }

    /// A pending branch, summed up from its own backtrace.
    fn branch(&self, address: u64, ty: usize, nesting: usize) -> Branch {
        let frames = if nesting < MAX_NESTING {
            self.walk_nested(address, ty, nesting + 1)
        } else {
            Vec::new()
        };
        let what = match (
            frames.first(),
            frames.last().and_then(|f| f.leaf.as_deref()),
        ) {
            // How long it had left when read is the frame's bound's story, told as of the end.
            (Some(first), Some(leaf)) if leaf.starts_with("sleeping") => {
                format!("{} (sleeping)", first.function)
            }
            (Some(first), Some(leaf)) => format!("{} ({leaf})", first.function),
            (Some(first), None) => first.function.to_string(),
            (None, _) => self
                .types
                .get(ty)
                .map_or_else(|_| "?".into(), |info| self.types.readable(&info.name)),
        };
        Branch {
            pending: true,
            what,
            bound: timers::earliest(frames.into_iter().filter_map(|frame| frame.bound)),
        }
    }

    /// What the closure of the `poll_fn` future at `address` captured as `name` (by reference,
    /// `_ref__name`, or by value), followed through references.
    fn captured(&self, address: u64, poll_fn: &TypeInfo, name: &str) -> Option<(u64, usize)> {
        let closure = poll_fn.member("f")?;
        let captures = self.types.get(closure.ty?).ok()?;
        let member = captures
            .member(&format!("_ref__{name}"))
            .or_else(|| captures.member(name))?;
        let (mut at, mut ty) = (address + closure.offset + member.offset, member.ty?);
        for _ in 0..4 {
            let TypeKind::Pointer { pointee } = self.types.get(ty).ok()?.kind else {
                return Some((at, ty));
            };
            at = self.memory.read_u64(at)?;
            ty = pointee?;
        }
        None
    }

    /// A tuple's fields in order (`__0`, `__1`, ...).
    fn tuple_members(&self, ty: usize) -> Option<Vec<Member>> {
        let TypeKind::Struct { members, .. } = &self.types.get(ty).ok()?.kind else {
            return None;
        };
        let mut members = members.clone();
        members.sort_by_key(|member| {
            member
                .name
                .strip_prefix("__")
                .and_then(|n| n.parse::<usize>().ok())
        });
        Some(members)
    }

    /// Whether the `MaybeDone` at `address` still holds its future.
    fn maybe_done(&self, address: u64, ty: usize) -> Slot {
        let Some(info) = self.types.get(ty).ok() else {
            return Slot::Unknown;
        };
        match self.active_variant(address, &info) {
            None => Slot::Unknown,
            Some(active) if active.name != "Future" => Slot::Done,
            // `Future { future }` in tokio 1.54; a tuple variant `Future(F)` reads as `__0`.
            Some(_) => ["future", "__0"]
                .iter()
                .find_map(|field| self.variant_field(address, &info, "Future", field))
                .map_or(Slot::Unknown, |(future, ty)| Slot::Pending(future, ty)),
        }
    }
}

/// `in tokio::select!, 2 of 3 branches pending: a (waiting for x); b`.
fn summary(which: TokioMacro, branches: &[Branch]) -> String {
    let pending: Vec<&str> = branches
        .iter()
        .filter(|branch| branch.pending)
        .map(|branch| branch.what.as_str())
        .collect();
    let mut text = format!(
        "in {}, {} of {} branches pending",
        which.name(),
        pending.len(),
        branches.len()
    );
    if !pending.is_empty() {
        text.push_str(": ");
        text.push_str(&pending.join("; "));
    }
    text
}

/// A `select!` ends when its first branch does, so a timer in any pending branch bounds it; a
/// `join!` waits for all of them, so only a timer in every pending branch does.
fn bound(which: TokioMacro, branches: &[Branch]) -> Option<Box<Bound>> {
    let pending = branches.iter().filter(|branch| branch.pending);
    let (found, how) = match which {
        TokioMacro::Select => (
            timers::earliest(pending.filter_map(|branch| branch.bound.clone())),
            "in a tokio::select! branch".to_owned(),
        ),
        TokioMacro::Join | TokioMacro::TryJoin => (
            timers::latest(pending.map(|branch| branch.bound.clone())),
            format!("in every {} branch", which.name()),
        ),
    };
    found.map(|bound| {
        Box::new(Bound {
            by: intern(&format!("{} {how}", bound.by)),
            ..*bound
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(what: &str, deadline_ns: Option<Option<u64>>) -> Branch {
        Branch {
            pending: true,
            what: what.into(),
            bound: deadline_ns.map(|deadline_ns| {
                Box::new(Bound {
                    by: "tokio::time::Sleep".into(),
                    deadline_ns,
                })
            }),
        }
    }

    #[test]
    fn macros_are_told_by_their_source_file() {
        let tokio = "/root/.cargo/registry/src/index.crates.io-1949cf/tokio-1.54.1/src/macros/";
        assert_eq!(
            TokioMacro::of(&format!("{tokio}select.rs")),
            Some(TokioMacro::Select)
        );
        assert_eq!(
            TokioMacro::of(&format!("{tokio}join.rs")),
            Some(TokioMacro::Join)
        );
        assert_eq!(
            TokioMacro::of(&format!("{tokio}try_join.rs")),
            Some(TokioMacro::TryJoin)
        );
        assert_eq!(TokioMacro::of("/work/app/src/macros/select.rs"), None);
        assert_eq!(TokioMacro::of(&format!("{tokio}pin.rs")), None);
    }

    #[test]
    fn a_summary_names_the_pending_branches() {
        let branches = [
            pending(
                "tokio::sync::oneshot::Receiver<u32> (waiting for a oneshot value)",
                None,
            ),
            Branch::done(),
            pending("app::ping", None),
        ];
        assert_eq!(
            summary(TokioMacro::Select, &branches),
            "in tokio::select!, 2 of 3 branches pending: tokio::sync::oneshot::Receiver<u32> \
             (waiting for a oneshot value); app::ping"
        );
        assert_eq!(
            summary(TokioMacro::Join, &[Branch::done()]),
            "in tokio::join!, 0 of 1 branches pending"
        );
    }

    #[test]
    fn a_select_is_bounded_by_any_timer_a_join_only_by_all() {
        let branches = [
            pending("rx", None),
            pending("sleep", Some(Some(5))),
            pending("sleep", Some(Some(3))),
        ];
        let select = bound(TokioMacro::Select, &branches).expect("bounded");
        assert_eq!(select.deadline_ns, Some(3));
        assert_eq!(&*select.by, "tokio::time::Sleep in a tokio::select! branch");
        assert_eq!(bound(TokioMacro::Join, &branches), None);
        let all = bound(TokioMacro::Join, &branches[1..]).expect("bounded");
        assert_eq!(all.deadline_ns, Some(5));
        assert_eq!(&*all.by, "tokio::time::Sleep in every tokio::join! branch");
        // Done branches bound nothing.
        assert_eq!(bound(TokioMacro::Select, &[Branch::done()]), None);
    }
}
