//! What DWARF tells resolve: the future type `T` of each `raw::poll::<T, S>` instance (and of
//! each scheduler spawn function, generic the same way), and the offsets of tokio's
//! `Header::{state, vtable}` and `Vtable::id_offset`.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object as _, ObjectSection as _};

use super::{Layout, futures::udata};

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

pub(super) struct DwarfInfo {
    pub has_dwarf: bool,
    pub layout: Option<Layout>,
    /// Indexed like the `poll_symbols` passed to [`read`].
    pub poll_type_names: Vec<Option<String>>,
    /// The `.debug_info` offset of each poll's `T`, for the future decoder.
    pub poll_types: Vec<Option<usize>>,
    /// The task cell type `Cell<T, S>` of each poll's `T`.
    pub poll_cells: Vec<Option<usize>>,
    /// What each impl block is for, by the impl's path: `app::server::{impl#0}` ->
    /// `app::server::Listener` (from the linkage names of its methods).
    pub impls: HashMap<String, String>,
    /// Where the user wrote each await that a macro expanded to: the future a `select!` or
    /// `join!` awaits (`PollFn<app::f::{async_fn#0}::{closure_env#0}>`) -> (file, line). The
    /// await's own location is inside the macro's source; the `__awaitee` variable of the
    /// function's body carries the line of the macro call.
    pub macro_awaits: HashMap<String, (String, u64)>,
    /// The futures given to `block_on` and their poll functions.
    pub block_on: super::block_on::Found,
}

/// `poll_symbols` are the mangled names (no `.llvm.` suffix) of the `raw::poll` instances.
pub(super) fn read(file: &object::File<'_>, poll_symbols: &[&str]) -> DwarfInfo {
    let mut info = DwarfInfo {
        has_dwarf: false,
        layout: None,
        poll_type_names: vec![None; poll_symbols.len()],
        poll_types: vec![None; poll_symbols.len()],
        poll_cells: vec![None; poll_symbols.len()],
        impls: HashMap::new(),
        macro_awaits: HashMap::new(),
        block_on: Default::default(),
    };
    let has_debug_info = file
        .section_by_name(".debug_info")
        .is_some_and(|section| section.size() > 0);
    if !has_debug_info {
        return info;
    }
    info.has_dwarf = true;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|section| section.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let Ok(sections) = gimli::DwarfSections::load(load) else {
        return info;
    };
    let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
    let wanted: HashMap<&str, usize> = poll_symbols
        .iter()
        .enumerate()
        .map(|(index, name)| (*name, index))
        .collect();
    let mut header = LayoutParts::default();
    let mut cells: HashMap<String, usize> = HashMap::new();
    let mut elsewhere = Vec::new();
    let mut block_on = super::block_on::Collector::default();
    let mut units = dwarf.units();
    while let Ok(Some(unit_header)) = units.next() {
        let Ok(unit) = dwarf.unit(unit_header) else {
            continue;
        };
        let mut found = Found {
            names: &mut info.poll_type_names,
            types: &mut info.poll_types,
            cells: &mut cells,
            elsewhere: &mut elsewhere,
            layout: &mut header,
            impls: &mut info.impls,
            macro_awaits: &mut info.macro_awaits,
            block_on: &mut block_on,
        };
        let _ = scan_unit(&dwarf, &unit, &wanted, &mut found);
    }
    resolve_elsewhere(&dwarf, &elsewhere, &mut info, &mut cells);
    info.block_on = block_on.finish();
    info.layout = header.layout();
    for (index, name) in info.poll_type_names.iter().enumerate() {
        info.poll_cells[index] = name.as_ref().and_then(|name| cells.get(name).copied());
    }
    info
}

#[derive(Default)]
struct LayoutParts {
    header_state: Option<u64>,
    header_vtable: Option<u64>,
    vtable_id_offset: Option<u64>,
}

impl LayoutParts {
    /// The layout DWARF gives, if the kernel side can read it: it takes a header's state and
    /// vtable from the words it reads at once ([`probe_common::HEADER_WORDS`]).
    fn layout(&self) -> Option<Layout> {
        let in_header_words = |offset: u64| {
            offset.is_multiple_of(8) && offset < (probe_common::HEADER_WORDS * 8) as u64
        };
        Some(Layout {
            header_state: self
                .header_state
                .filter(|offset| in_header_words(*offset))?,
            header_vtable: self
                .header_vtable
                .filter(|offset| in_header_words(*offset))?,
            vtable_id_offset: self.vtable_id_offset?,
            from_dwarf: true,
        })
    }
}

/// What the walk fills in.
struct Found<'a> {
    names: &'a mut [Option<String>],
    types: &'a mut [Option<usize>],
    /// `Cell<T, S>` by the qualified name of `T`.
    cells: &'a mut HashMap<String, usize>,
    /// Template parameters whose type is in another unit, by that type's `.debug_info` offset.
    elsewhere: &'a mut Vec<(usize, Elsewhere)>,
    layout: &'a mut LayoutParts,
    impls: &'a mut HashMap<String, String>,
    macro_awaits: &'a mut HashMap<String, (String, u64)>,
    block_on: &'a mut super::block_on::Collector,
}

/// One depth-first walk of a unit, keeping the path of enclosing namespaces and types.
fn scan_unit(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    wanted: &HashMap<&str, usize>,
    found: &mut Found<'_>,
) -> gimli::Result<()> {
    let Found {
        names,
        types,
        cells,
        elsewhere,
        layout,
        impls,
        macro_awaits,
        block_on,
    } = found;
    let mut path: Vec<(isize, String)> = Vec::new();
    let mut depth = 0isize;
    // The `raw::poll` subprogram whose template parameters come next: (poll index, its depth).
    let mut poll: Option<(usize, isize)> = None;
    // The tokio struct whose members come next: (which, its depth).
    let mut layout_struct: Option<(LayoutStruct, isize)> = None;
    // Types to name once the walk has seen them: offset -> poll index.
    let mut type_refs: Vec<(UnitOffset, usize)> = Vec::new();
    // The `Cell<T, S>` whose template parameters come next, and the cells' `T`s.
    let mut cell: Option<(UnitOffset, isize)> = None;
    let mut cell_refs: Vec<(UnitOffset, UnitOffset)> = Vec::new();
    let mut type_names: HashMap<UnitOffset, String> = HashMap::new();
    // `__awaitee` variables: (their type, decl file index, decl line).
    let mut awaitees: Vec<(UnitOffset, u64, u64)> = Vec::new();
    block_on.begin_unit();
    let mut entries = unit.entries();
    while let Some((delta, entry)) = entries.next_dfs()? {
        depth += delta;
        while path.last().is_some_and(|(d, _)| *d >= depth) {
            path.pop();
        }
        if poll.is_some_and(|(_, d)| depth <= d) {
            poll = None;
        }
        if layout_struct.is_some_and(|(_, d)| depth <= d) {
            layout_struct = None;
        }
        if cell.is_some_and(|(_, d)| depth <= d) {
            cell = None;
        }
        // Its own reads failing must not cost the rest of the walk.
        let _ = block_on.entry(dwarf, unit, entry, depth, &path);
        let name = || -> Option<String> {
            let value = entry.attr_value(gimli::DW_AT_name).ok()??;
            let name = dwarf.attr_string(unit, value).ok()?;
            Some(name.to_string_lossy().into_owned())
        };
        match entry.tag() {
            gimli::DW_TAG_namespace
            | gimli::DW_TAG_structure_type
            | gimli::DW_TAG_union_type
            | gimli::DW_TAG_enumeration_type => {
                let Some(name) = name() else { continue };
                let qualified = qualify(&path, &name);
                if entry.tag() == gimli::DW_TAG_structure_type
                    && qualified.starts_with("tokio::runtime::task::core::Cell<")
                {
                    cell = Some((entry.offset(), depth));
                }
                if entry.tag() == gimli::DW_TAG_structure_type {
                    layout_struct = match qualified.as_str() {
                        "tokio::runtime::task::core::Header" => Some((LayoutStruct::Header, depth)),
                        "tokio::runtime::task::raw::Vtable" => Some((LayoutStruct::Vtable, depth)),
                        _ => None,
                    };
                }
                if entry.tag() != gimli::DW_TAG_namespace {
                    type_names.insert(entry.offset(), qualified.clone());
                }
                path.push((depth, name));
            }
            gimli::DW_TAG_subprogram => {
                let linkage = entry
                    .attr_value(gimli::DW_AT_linkage_name)?
                    .or(entry.attr_value(gimli::DW_AT_MIPS_linkage_name)?)
                    .and_then(|value| dwarf.attr_string(unit, value).ok());
                let linkage = linkage.as_ref().map(|l| l.to_string_lossy());
                if let Some(index) = linkage.as_deref().and_then(|l| wanted.get(l).copied())
                    && names[index].is_none()
                {
                    poll = Some((index, depth));
                }
                if let Some(linkage) = &linkage {
                    note_impl(&path, linkage, impls);
                }
            }
            gimli::DW_TAG_template_type_parameter => {
                let child = |outer: Option<isize>| outer.is_some_and(|d| depth == d + 1);
                // The future is `T` (`raw::poll`, `Cell`, `bind_new_task`), or `F` (the
                // current-thread scheduler's `spawn`).
                if !(child(cell.map(|(_, d)| d)) || child(poll.map(|(_, d)| d)))
                    || !matches!(name().as_deref(), Some("T" | "F"))
                {
                    continue;
                }
                let target = entry.attr_value(gimli::DW_AT_type)?;
                if let Some((cell_offset, _)) = cell {
                    match target {
                        Some(AttributeValue::UnitRef(offset)) => {
                            cell_refs.push((offset, cell_offset))
                        }
                        Some(AttributeValue::DebugInfoRef(offset)) => {
                            if let Some(cell) = global(unit, cell_offset) {
                                elsewhere.push((offset.0, Elsewhere::Cell(cell)));
                            }
                        }
                        _ => {}
                    }
                }
                if let Some((index, _)) = poll {
                    match target {
                        Some(AttributeValue::UnitRef(offset)) => type_refs.push((offset, index)),
                        Some(AttributeValue::DebugInfoRef(offset)) => {
                            elsewhere.push((offset.0, Elsewhere::Poll(index)))
                        }
                        _ => {}
                    }
                    poll = None;
                }
            }
            gimli::DW_TAG_variable if is_named(dwarf, unit, entry, b"__awaitee") => {
                if let Some(AttributeValue::UnitRef(offset)) =
                    entry.attr_value(gimli::DW_AT_type)?
                    && let Some(file) = udata(entry.attr_value(gimli::DW_AT_decl_file)?)
                    && let Some(line) = udata(entry.attr_value(gimli::DW_AT_decl_line)?)
                {
                    awaitees.push((offset, file, line));
                }
            }
            gimli::DW_TAG_member => {
                if let Some((which, d)) = layout_struct
                    && depth == d + 1
                    && let Some(AttributeValue::Udata(offset)) =
                        entry.attr_value(gimli::DW_AT_data_member_location)?
                {
                    match (which, name().as_deref()) {
                        (LayoutStruct::Header, Some("state")) => layout.header_state = Some(offset),
                        (LayoutStruct::Header, Some("vtable")) => {
                            layout.header_vtable = Some(offset)
                        }
                        (LayoutStruct::Vtable, Some("id_offset")) => {
                            layout.vtable_id_offset = Some(offset)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    block_on.end_unit(unit, &type_names);
    for (offset, index) in type_refs {
        if let Some(name) = type_names.get(&offset) {
            names[index] = Some(name.clone());
            types[index] = global(unit, offset);
        }
    }
    for (offset, cell_offset) in cell_refs {
        if let (Some(name), Some(cell)) = (type_names.get(&offset), global(unit, cell_offset)) {
            cells.entry(name.clone()).or_insert(cell);
        }
    }
    for (offset, file, line) in awaitees {
        // A closure the function's body made for the await: a macro's `poll_fn(|cx| ...)`.
        if let Some(name) = type_names.get(&offset)
            && name.contains("{closure_env#")
            && !macro_awaits.contains_key(name)
            && let Some(file) = super::futures::file_path(dwarf, unit, file)
        {
            macro_awaits.insert(name.clone(), (file, line));
        }
    }
    Ok(())
}

/// A unit's DIE offset as a `.debug_info` offset.
fn global(unit: &gimli::Unit<Reader<'_>>, offset: UnitOffset) -> Option<usize> {
    offset.to_debug_info_offset(&unit.header).map(|o| o.0)
}

/// What a template parameter typed in another unit belongs to. (LTO merges code from many
/// crates into units that refer to each other's types: a `raw::poll::<T, S>` in one unit, its
/// `T` in another.)
#[derive(Clone, Copy)]
enum Elsewhere {
    /// The `T` of this `raw::poll` (index into the poll symbols).
    Poll(usize),
    /// The `T` of the `Cell<T, S>` at this `.debug_info` offset.
    Cell(usize),
}

/// Names the types that template parameters referred to in other units, once every unit has
/// been walked, and files them as the walk of their own unit would have.
fn resolve_elsewhere(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    elsewhere: &[(usize, Elsewhere)],
    info: &mut DwarfInfo,
    cells: &mut HashMap<String, usize>,
) {
    if elsewhere.is_empty() {
        return;
    }
    let wanted: HashSet<usize> = elsewhere.iter().map(|(offset, _)| *offset).collect();
    let names = type_names_at(dwarf, &wanted);
    for (offset, of) in elsewhere {
        let Some(name) = names.get(offset) else {
            continue;
        };
        match *of {
            Elsewhere::Poll(index) if info.poll_type_names[index].is_none() => {
                info.poll_type_names[index] = Some(name.clone());
                info.poll_types[index] = Some(*offset);
            }
            Elsewhere::Poll(_) => {}
            Elsewhere::Cell(cell) => {
                cells.entry(name.clone()).or_insert(cell);
            }
        }
    }
}

/// The qualified names of the types at `wanted` (`.debug_info` offsets), walking only the
/// units that hold them.
fn type_names_at(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    wanted: &HashSet<usize>,
) -> HashMap<usize, String> {
    let mut names = HashMap::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Some(start) = header.offset().as_debug_info_offset().map(|o| o.0) else {
            continue;
        };
        let end = start + header.length_including_self();
        if !wanted.iter().any(|offset| (start..end).contains(offset)) {
            continue;
        }
        if let Ok(unit) = dwarf.unit(header) {
            let _ = name_types_in(dwarf, &unit, wanted, &mut names);
        }
    }
    names
}

fn name_types_in(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    wanted: &HashSet<usize>,
    names: &mut HashMap<usize, String>,
) -> gimli::Result<()> {
    for (offset, name) in super::futures::qualified_names(dwarf, unit)? {
        if let Some(offset) = global(unit, offset)
            && wanted.contains(&offset)
        {
            names.insert(offset, name);
        }
    }
    Ok(())
}

/// A function inside an `{impl#N}` namespace (an async method's body, a closure in a method)
/// names the impl's type in its linkage name: `<app::Listener>::run::{closure#0}` (v0) or
/// `app::Listener::run::{{closure}}` (legacy) for `app::{impl#2}::run::{async_fn#0}`. (The
/// methods themselves are declared inside their type, outside the impl's namespace.)
fn note_impl(path: &[(isize, String)], linkage: &str, impls: &mut HashMap<String, String>) {
    let Some(at) = path
        .iter()
        .rposition(|(_, name)| name.starts_with("{impl#"))
    else {
        return;
    };
    let key = qualify(&path[..at], &path[at].1);
    if impls.contains_key(&key) {
        return;
    }
    let function = format!("{:#}", rustc_demangle::demangle(linkage));
    // The segments after the impl's: the namespaces between it and the function, and the
    // function's own name.
    let after = path.len() - at;
    if let Some(ty) = super::names::impl_self_type(&function, after) {
        impls.insert(key, ty);
    }
}

/// Whether `entry`'s DW_AT_name is `name` (compared without allocating: every variable of the
/// program passes here).
fn is_named(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>,
    name: &[u8],
) -> bool {
    entry
        .attr_value(gimli::DW_AT_name)
        .ok()
        .flatten()
        .and_then(|value| dwarf.attr_string(unit, value).ok())
        .is_some_and(|found| found.slice() == name)
}

#[derive(Clone, Copy)]
enum LayoutStruct {
    Header,
    Vtable,
}

fn qualify(path: &[(isize, String)], name: &str) -> String {
    let mut qualified = String::new();
    for (_, part) in path {
        qualified.push_str(part);
        qualified.push_str("::");
    }
    qualified.push_str(name);
    qualified
}
