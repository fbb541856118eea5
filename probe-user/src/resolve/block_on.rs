//! The futures given to `block_on`: the body of `#[tokio::main]` and `#[tokio::test]`, and of
//! any `Runtime::block_on(fut)`. They are no tokio tasks (no header, no task vtable, no
//! `raw::poll`), so they are found in DWARF and probed at their own poll function, whose first
//! argument (`self: Pin<&mut F>`) is the future's address: the pseudo-task's "header".
//!
//! Which futures are bodies, from the DWARF walk of [`super::dwarf`]:
//! - the variables named `body` of a plain function, whose type is an async state machine:
//!   tokio's macros write `let body = async { ... };` in the function they expand. A test's body
//!   then goes to `block_on` as `Pin<&mut dyn Future>`, so the generic `F` says nothing there;
//! - the type parameter `F` of tokio's `block_on` functions (`Runtime::block_on<F>`,
//!   `CachedParkThread::block_on<F>`, ...) when it is an async state machine, behind `Pin<&mut _>`
//!   or `Pin<Box<_>>` or not: a hand-written `runtime.block_on(run())`. tokio's own async fns,
//!   which its blocking calls (`Mutex::blocking_lock`) block_on, are left out: tasks await them
//!   everywhere, and each of their polls would hit the probe.
//!
//! A body's future may also be awaited inside a task (`tokio::spawn(run())` besides
//! `block_on(run())`): the kernel side leaves out polls that run inside a task's poll.
//!
//! Each body's poll function is the subprogram `{async_block#N}` / `{async_fn#N}` whose first
//! parameter has type `Pin<&mut F>`. An optimised build may inline it into `block_on` (tokio
//! calls it from one place): then there is nothing to probe, and a note says so. A test's body is
//! called through a vtable and never inlined.

use std::collections::{BTreeMap, HashMap};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use probe_common::BlockOnDone;

use super::{
    futures::{TypeIndex, TypeKind},
    names,
};

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// What every report calls a block_on future: `block_on: app::main::{async block#0}`.
pub const PREFIX: &str = "block_on: ";

/// A future given to `block_on` that can be probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// What users see: [`PREFIX`] and the future's name.
    pub name: String,
    /// The future's DWARF type.
    pub ty: super::futures::TypeId,
    /// Its poll function's (link-time) address.
    pub poll_address: u64,
    /// How its poll's end tells `Ready`.
    pub done: BlockOnDone,
    /// Its `dyn Future` vtable (link-time address), when it is coerced to one (a test's body):
    /// a pointer to it next to the future's address, on a thread's stack, finds a parked body
    /// in memory.
    pub vtable: Option<u64>,
}

/// The role of a subprogram, for the entries under it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A plain function: its `body` variables may be tokio's macros' bodies.
    Plain,
    /// An async state machine's poll function: its first parameter is `Pin<&mut F>`.
    AsyncPoll,
    /// One of tokio's `block_on` functions: its parameter `F` is the future.
    BlockOn,
    Other,
}

struct Subprogram {
    depth: isize,
    offset: UnitOffset,
    role: Role,
    params_seen: usize,
}

/// What the DWARF walk found so far (see [`Collector::finish`]).
#[derive(Debug, Default)]
pub(super) struct Found {
    /// Body types by name, with their `.debug_info` offset.
    bodies: BTreeMap<String, usize>,
    /// Poll functions by the name of the state machine they poll: `None` where they exist
    /// only inlined.
    polls: HashMap<String, Option<u64>>,
    /// `dyn Future` vtables by the name of the type they are for.
    vtables: HashMap<String, u64>,
}

/// Fed every entry of every unit by the DWARF walk; keeps what it needs of one unit until the
/// unit's type names are known.
#[derive(Default)]
pub(super) struct Collector {
    stack: Vec<Subprogram>,
    body_types: Vec<UnitOffset>,
    block_on_params: Vec<UnitOffset>,
    /// (poll function, the type of its first parameter).
    poll_params: Vec<(UnitOffset, UnitOffset)>,
    /// Poll functions' addresses, where they have code of their own.
    poll_addresses: HashMap<UnitOffset, u64>,
    /// Out-of-line copies of functions that are inlined elsewhere: (abstract origin, address).
    copies: Vec<(UnitOffset, u64)>,
    found: Found,
}

impl Collector {
    /// Forgets what the last unit left, if its walk was cut short.
    pub fn begin_unit(&mut self) {
        self.stack.clear();
        self.body_types.clear();
        self.block_on_params.clear();
        self.poll_params.clear();
        self.poll_addresses.clear();
        self.copies.clear();
    }

    /// Takes in one entry of the depth-first walk; `path` holds the names of the namespaces
    /// and types around it.
    pub fn entry(
        &mut self,
        dwarf: &gimli::Dwarf<Reader<'_>>,
        unit: &gimli::Unit<Reader<'_>>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>,
        depth: isize,
        path: &[(isize, String)],
    ) -> gimli::Result<()> {
        while self.stack.last().is_some_and(|sub| sub.depth >= depth) {
            self.stack.pop();
        }
        // Every entry of the program passes here: names are compared without allocating.
        let name = || -> Option<&[u8]> {
            let value = entry.attr_value(gimli::DW_AT_name).ok()??;
            Some(dwarf.attr_string(unit, value).ok()?.slice())
        };
        let type_ref = || match entry.attr_value(gimli::DW_AT_type) {
            Ok(Some(AttributeValue::UnitRef(offset))) => Some(offset),
            _ => None,
        };
        match entry.tag() {
            gimli::DW_TAG_subprogram => self.subprogram(dwarf, unit, entry, depth, path)?,
            gimli::DW_TAG_formal_parameter => {
                if let Some(sub) = self.stack.last_mut()
                    && sub.depth + 1 == depth
                    && sub.role == Role::AsyncPoll
                {
                    sub.params_seen += 1;
                    if sub.params_seen == 1
                        && let Some(ty) = type_ref()
                    {
                        self.poll_params.push((sub.offset, ty));
                    }
                }
            }
            gimli::DW_TAG_template_type_parameter => {
                if let Some(sub) = self.stack.last()
                    && sub.depth + 1 == depth
                    && sub.role == Role::BlockOn
                    && name() == Some(b"F")
                    && let Some(ty) = type_ref()
                {
                    self.block_on_params.push(ty);
                }
            }
            gimli::DW_TAG_variable => match name() {
                Some(b"body") => {
                    if self.stack.last().is_some_and(|sub| sub.role == Role::Plain)
                        && let Some(ty) = type_ref()
                    {
                        self.body_types.push(ty);
                    }
                }
                Some(name @ [b'<', ..]) => {
                    if let Some(ty) = vtable_for(&String::from_utf8_lossy(name))
                        && let Some(address) = static_address(entry)
                    {
                        self.found.vtables.insert(ty.to_owned(), address);
                    }
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn subprogram(
        &mut self,
        dwarf: &gimli::Dwarf<Reader<'_>>,
        unit: &gimli::Unit<Reader<'_>>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>,
        depth: isize,
        path: &[(isize, String)],
    ) -> gimli::Result<()> {
        let address = match entry.attr_value(gimli::DW_AT_low_pc)? {
            Some(value) => dwarf
                .attr_address(unit, value)?
                .filter(|&address| address != 0),
            None => None,
        };
        let name = match entry.attr_value(gimli::DW_AT_name)? {
            Some(value) => Some(dwarf.attr_string(unit, value)?.slice()),
            None => None,
        };
        if let (Some(AttributeValue::UnitRef(origin)), Some(address)) =
            (entry.attr_value(gimli::DW_AT_abstract_origin)?, address)
        {
            self.copies.push((origin, address));
        }
        let role = match name {
            Some(name) if name.starts_with(b"{async_block#") || name.starts_with(b"{async_fn#") => {
                Role::AsyncPoll
            }
            Some(name)
                if name.starts_with(b"block_on")
                    && is_tokio_block_on(path, &String::from_utf8_lossy(name)) =>
            {
                Role::BlockOn
            }
            Some([first, ..]) if *first != b'{' => Role::Plain,
            _ => Role::Other,
        };
        if role == Role::AsyncPoll
            && let Some(address) = address
        {
            self.poll_addresses.insert(entry.offset(), address);
        }
        self.stack.push(Subprogram {
            depth,
            offset: entry.offset(),
            role,
            params_seen: 0,
        });
        Ok(())
    }

    /// The unit is walked: names its types (qualified, by offset) and keeps what it found.
    pub fn end_unit(
        &mut self,
        unit: &gimli::Unit<Reader<'_>>,
        type_names: &HashMap<UnitOffset, String>,
    ) {
        let global = |offset: UnitOffset| {
            offset
                .to_debug_info_offset(&unit.header)
                .map(|offset| offset.0)
        };
        for ty in self.body_types.drain(..) {
            if let Some(name) = type_names.get(&ty).filter(|name| is_state_machine(name))
                && let Some(id) = global(ty)
            {
                self.found.bodies.entry(name.clone()).or_insert(id);
            }
        }
        if !self.block_on_params.is_empty() {
            let by_name: HashMap<&str, UnitOffset> = type_names
                .iter()
                .map(|(offset, name)| (name.as_str(), *offset))
                .collect();
            for ty in self.block_on_params.drain(..) {
                let Some(future) = type_names.get(&ty).map(|name| pinned(name)) else {
                    continue;
                };
                // tokio's own blocking calls (`Mutex::blocking_lock`, `oneshot::Receiver::
                // blocking_recv`) block_on its async fns, which tasks await everywhere.
                if is_state_machine(future)
                    && !future.starts_with("tokio::")
                    && let Some(id) = by_name.get(future).and_then(|&offset| global(offset))
                {
                    self.found.bodies.entry(future.to_owned()).or_insert(id);
                }
            }
        }
        let mut polled_by: HashMap<UnitOffset, &str> = HashMap::new();
        for (poll, ty) in self.poll_params.drain(..) {
            let Some(future) = type_names
                .get(&ty)
                .and_then(|name| name.strip_prefix("core::pin::Pin<&mut "))
                .and_then(|name| name.strip_suffix('>'))
            else {
                continue;
            };
            polled_by.insert(poll, future);
            let address = self.poll_addresses.get(&poll).copied();
            let known = self.found.polls.entry(future.to_owned()).or_default();
            if known.is_none() {
                *known = address;
            }
        }
        for (origin, address) in self.copies.drain(..) {
            if let Some(future) = polled_by.get(&origin) {
                self.found.polls.insert((*future).to_owned(), Some(address));
            }
        }
        self.begin_unit();
    }

    pub fn finish(self) -> Found {
        self.found
    }
}

/// `tokio::runtime::…::block_on` (any of tokio's: `Runtime`, the schedulers', `CachedParkThread`,
/// `BlockingRegionGuard`, `Handle`, `LocalRuntime`) and `tokio::task::local::…::block_on`.
fn is_tokio_block_on(path: &[(isize, String)], name: &str) -> bool {
    let last = names::without_generics(name);
    let in_tokio = path.first().is_some_and(|(_, first)| first == "tokio")
        && path
            .get(1)
            .is_some_and(|(_, second)| second == "runtime" || second == "task");
    in_tokio && matches!(last.as_str(), "block_on" | "block_on_inner")
}

/// An async fn's or async block's state machine (`…::{async_fn_env#0}`, maybe with generics).
fn is_state_machine(type_name: &str) -> bool {
    names::without_generics(type_name)
        .rsplit("::")
        .next()
        .is_some_and(|last| {
            last.starts_with("{async_fn_env#") || last.starts_with("{async_block_env#")
        })
}

/// The future inside `Pin<&mut F>`, `Pin<Box<F>>` or `&mut F` (how tokio's functions pass it on).
fn pinned(type_name: &str) -> &str {
    let mut name = type_name;
    loop {
        let inner = name
            .strip_prefix("core::pin::Pin<")
            .and_then(|rest| rest.strip_suffix('>'))
            .or_else(|| name.strip_prefix("&mut "))
            .or_else(|| {
                name.strip_prefix("alloc::boxed::Box<")
                    .and_then(|rest| rest.strip_suffix(", alloc::alloc::Global>"))
            });
        match inner {
            Some(inner) => name = inner,
            None => return name,
        }
    }
}

/// `T` of the vtable static `<T as core::future::future::Future>::{vtable}`.
fn vtable_for(name: &str) -> Option<&str> {
    name.strip_prefix('<')?
        .strip_suffix(" as core::future::future::Future>::{vtable}")
}

/// A static's address from its `DW_AT_location` (`DW_OP_addr A`).
fn static_address(entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>) -> Option<u64> {
    let Ok(Some(AttributeValue::Exprloc(expression))) = entry.attr_value(gimli::DW_AT_location)
    else {
        return None;
    };
    match expression.0.slice() {
        [op, address @ ..] if *op == gimli::DW_OP_addr.0 && address.len() == 8 => {
            Some(u64::from_le_bytes(address.try_into().ok()?))
        }
        _ => None,
    }
}

impl Found {
    /// The bodies that can be probed, named as tasks are (`name_of` a future type); what
    /// cannot be probed is said in `notes`.
    pub fn bodies(
        &self,
        types: &TypeIndex,
        name_of: &dyn Fn(&str) -> String,
        notes: &mut Vec<String>,
    ) -> Vec<Body> {
        let mut bodies = Vec::new();
        for (type_name, &ty) in &self.bodies {
            let name = format!("{PREFIX}{}", name_of(type_name));
            let poll_address = match self.polls.get(type_name) {
                Some(Some(address)) => *address,
                Some(None) => {
                    notes.push(format!(
                        "{name}: its poll function is inlined into tokio's block_on in this \
                         (optimised) build, so it is not followed; a debug build shows it"
                    ));
                    continue;
                }
                None => {
                    notes.push(format!(
                        "{name}: no poll function for it in DWARF, so it is not followed"
                    ));
                    continue;
                }
            };
            let Some(done) = completion(types, ty) else {
                notes.push(format!(
                    "{name}: its DWARF type is no async state machine, so it is not followed"
                ));
                continue;
            };
            bodies.push(Body {
                name,
                ty,
                poll_address,
                done,
                vtable: self.vtables.get(type_name).copied(),
            });
        }
        bodies
    }
}

/// Names the futures given to `block_on` that memory cannot show when they are parked: those
/// passed by value (`#[tokio::main]`, `Runtime::block_on(run())`), which leave no `dyn Future`
/// vtable next to their address on the stack. `probing`: the probe sees them at their next poll.
pub fn unfindable_note(task_types: &[super::TaskType], probing: bool) -> Option<String> {
    let names: Vec<&str> = task_types
        .iter()
        .filter(|task_type| {
            task_type
                .block_on
                .as_ref()
                .is_some_and(|body| body.vtable.is_none())
        })
        .map(|task_type| task_type.name.as_str())
        .collect();
    let names = names.join(", ");
    match (names.is_empty(), probing) {
        (true, _) => None,
        (false, true) => Some(format!(
            "{names}: a future given to block_on by value cannot be found in memory: parked \
             when the probe attached, it shows once it is polled again (never, if it hangs)"
        )),
        (false, false) => Some(format!(
            "{names}: a future given to block_on by value cannot be found in memory: not listed"
        )),
    }
}

/// Where a state machine keeps its discriminant, and the value that says it returned.
fn completion(types: &TypeIndex, ty: usize) -> Option<BlockOnDone> {
    let info = types.get(ty).ok()?;
    let TypeKind::StateMachine {
        discriminant,
        states,
    } = &info.kind
    else {
        return None;
    };
    let returned = states.iter().find(|state| state.name == "Returned")?;
    Some(BlockOnDone {
        offset: discriminant.offset,
        size: discriminant.size,
        returned: returned.discriminant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn futures_are_found_behind_the_pointers_tokio_passes() {
        assert_eq!(
            pinned("core::pin::Pin<&mut app::run::{async_fn_env#0}>"),
            "app::run::{async_fn_env#0}"
        );
        assert_eq!(
            pinned(
                "core::pin::Pin<alloc::boxed::Box<app::main::{async_block_env#0}, alloc::alloc::Global>>"
            ),
            "app::main::{async_block_env#0}"
        );
        assert_eq!(
            pinned("app::run::{async_fn_env#0}"),
            "app::run::{async_fn_env#0}"
        );
        assert!(!is_state_machine(pinned(
            "core::pin::Pin<&mut dyn core::future::future::Future<Output=()>>"
        )));
        assert!(is_state_machine(
            "tokio::sync::mutex::{impl#10}::lock::{async_fn_env#0}<u32>"
        ));
        assert!(!is_state_machine("core::future::poll_fn::PollFn<F>"));
    }

    #[test]
    fn tokio_block_on_functions_are_recognised() {
        let path = |parts: &[&str]| -> Vec<(isize, String)> {
            parts.iter().map(|part| (0, (*part).to_owned())).collect()
        };
        let runtime = path(&["tokio", "runtime", "runtime", "{impl#0}"]);
        assert!(is_tokio_block_on(
            &runtime,
            "block_on<app::run::{async_fn_env#0}>"
        ));
        assert!(is_tokio_block_on(&runtime, "block_on_inner<F>"));
        assert!(!is_tokio_block_on(&runtime, "block_on_something"));
        assert!(!is_tokio_block_on(
            &path(&["futures_executor", "local_pool"]),
            "block_on<F>"
        ));
    }

    #[test]
    fn vtable_statics_name_their_type() {
        assert_eq!(
            vtable_for("<app::t::{async_block_env#0} as core::future::future::Future>::{vtable}"),
            Some("app::t::{async_block_env#0}")
        );
        assert_eq!(vtable_for("<app::X as core::fmt::Debug>::{vtable}"), None);
    }
}
