//! The shapes of futures, from DWARF, parsed lazily: only the types a walk reaches are decoded,
//! and only the compilation units that hold them are opened, so a 50 MB binary with debuginfo
//! costs what its tasks' futures cost, not what the whole binary does.
//!
//! An `async fn`'s future (`path::to::f::{async_fn_env#0}`) is an enum whose discriminant is the
//! artificial member `__state`: 0 Unresumed, 1 Returned, 2 Panicked, 3.. one per `.await`
//! (`SuspendN`, with the await's file and line). A suspended state holds the awaited future in
//! `__awaitee` and the locals kept across the await beside it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use gimli::{AttributeValue, DebugInfoOffset, Reader as _, RunTimeEndian, UnitOffset};
use object::{Object as _, ObjectSection as _};

use super::mapped::{MappedFile, SectionBytes};

pub type Reader = gimli::EndianReader<RunTimeEndian, SectionBytes>;

/// A type, by its offset in `.debug_info`.
pub type TypeId = usize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// Qualified: `app::handler::{async_fn_env#0}`, `tokio::time::sleep::Sleep`.
    pub name: String,
    pub size: u64,
    pub kind: TypeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeKind {
    /// An `async fn` or `async {}` block's state machine.
    StateMachine {
        discriminant: Field,
        states: Vec<State>,
    },
    /// A struct, or an enum (with `variants`).
    Struct {
        members: Vec<Member>,
        variants: Option<(Field, Vec<Variant>)>,
    },
    Pointer {
        pointee: Option<TypeId>,
    },
    Base {
        encoding: BaseEncoding,
    },
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseEncoding {
    Signed,
    Unsigned,
    Bool,
    Char,
    Float,
}

/// Where an integer sits in its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u64,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub ty: Option<TypeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub discriminant: Option<u64>,
    pub name: String,
    pub ty: Option<TypeId>,
    pub offset: u64,
    /// Where the variant is declared: for a state machine's suspend state, the `.await`.
    pub file: Option<String>,
    pub line: u64,
}

/// One state of an async state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub discriminant: u64,
    /// `Unresumed`, `Returned`, `Panicked`, `Suspend0`, ...
    pub name: String,
    pub file: Option<String>,
    pub line: u64,
    /// The awaited future, for a suspend state.
    pub awaitee: Option<Member>,
    /// Locals kept across the await (no `__awaitee`), deduplicated by name.
    pub locals: Vec<Member>,
}

impl State {
    pub fn is_suspended(&self) -> bool {
        self.name.starts_with("Suspend")
    }
}

impl TypeInfo {
    pub fn member(&self, name: &str) -> Option<&Member> {
        match &self.kind {
            TypeKind::Struct { members, .. } => members.iter().find(|m| m.name == name),
            _ => None,
        }
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        match &self.kind {
            TypeKind::Struct {
                variants: Some((_, variants)),
                ..
            } => variants.iter().find(|v| v.name == name),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("no DWARF in this binary")]
    NoDwarf,
    #[error("reading DWARF: {0}")]
    Dwarf(#[from] gimli::Error),
    #[error("the DWARF type at {0:#x} nests too deeply (a cycle?)")]
    TooDeep(TypeId),
}

/// Deeper than decoding any real type goes (typedefs, a state machine's states and their
/// discriminants): damaged DWARF whose types refer to themselves would recurse forever.
const MAX_NESTING: usize = 32;

thread_local! {
    /// How many [`TypeIndex::get`] calls are decoding on this thread, one inside the other.
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct UnitData {
    unit: gimli::Unit<Reader>,
    /// Qualified names of the unit's named types, by offset.
    names: HashMap<UnitOffset, String>,
}

/// Lazily decoded DWARF types of one binary. Shareable across threads.
pub struct TypeIndex {
    dwarf: gimli::Dwarf<Reader>,
    /// Start offsets of every unit, sorted, for finding the unit of an offset.
    unit_starts: Vec<DebugInfoOffset>,
    units: Mutex<HashMap<DebugInfoOffset, Arc<UnitData>>>,
    types: Mutex<HashMap<TypeId, Arc<TypeInfo>>>,
    /// Found by resolve's walk over every unit: see [`TypeIndex::with_names`].
    impls: HashMap<String, String>,
    macro_awaits: HashMap<String, (String, u64)>,
}

impl std::fmt::Debug for TypeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeIndex")
            .field("units", &self.unit_starts.len())
            .finish_non_exhaustive()
    }
}

impl TypeIndex {
    /// The index of `file`'s DWARF types, keeping copies of its sections.
    pub fn new(file: &object::File<'_>) -> Result<Self, TypeError> {
        Self::with_sections(file, |section| SectionBytes::copied(section))
    }

    /// The index of `file`'s DWARF types, keeping windows on `mapped` (which `file` was parsed
    /// from) rather than copies.
    pub fn mapped(file: &object::File<'_>, mapped: &MappedFile) -> Result<Self, TypeError> {
        Self::with_sections(file, |section| mapped.section(section))
    }

    fn with_sections(
        file: &object::File<'_>,
        bytes: impl Fn(&object::Section<'_, '_>) -> Option<SectionBytes>,
    ) -> Result<Self, TypeError> {
        if file
            .section_by_name(".debug_info")
            .is_none_or(|section| section.size() == 0)
        {
            return Err(TypeError::NoDwarf);
        }
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            let data = file
                .section_by_name(id.name())
                .and_then(|section| bytes(&section))
                .unwrap_or_else(SectionBytes::empty);
            Ok(Reader::new(data, endian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        let mut unit_starts = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            if let Some(offset) = header.offset().as_debug_info_offset() {
                unit_starts.push(offset);
            }
        }
        unit_starts.sort_unstable_by_key(|offset| offset.0);
        Ok(Self {
            dwarf,
            unit_starts,
            units: Mutex::new(HashMap::new()),
            types: Mutex::new(HashMap::new()),
            impls: HashMap::new(),
            macro_awaits: HashMap::new(),
        })
    }

    /// What only a walk over every unit finds, which resolve does once anyway: the type each
    /// `{impl#N}` is for (`app::{impl#0}` -> `app::Listener`), and the user's line of each await a
    /// macro wrote (the future `select!` awaits -> the line of the `select!`).
    pub fn with_names(
        mut self,
        impls: HashMap<String, String>,
        macro_awaits: HashMap<String, (String, u64)>,
    ) -> Self {
        self.impls = impls;
        self.macro_awaits = macro_awaits;
        self
    }

    /// A type or function name as a person reads it (see [`super::names::readable`]).
    pub fn readable(&self, name: &str) -> String {
        super::names::readable(name, &|key| self.impls.get(key).cloned())
    }

    /// The function a state machine type is the future of, readable.
    pub fn function_name(&self, type_name: &str) -> String {
        super::names::function_name(type_name, &|key| self.impls.get(key).cloned())
    }

    /// Where the user wrote the macro (`select!`, `join!`) whose await awaits `awaitee`.
    pub fn macro_await(&self, awaitee: &str) -> Option<(&str, u64)> {
        self.macro_awaits
            .get(awaitee)
            .map(|(file, line)| (file.as_str(), *line))
    }

    fn unit_of(&self, offset: DebugInfoOffset) -> Result<Arc<UnitData>, TypeError> {
        let index = self
            .unit_starts
            .partition_point(|start| start.0 <= offset.0);
        let start = *index
            .checked_sub(1)
            .and_then(|i| self.unit_starts.get(i))
            .ok_or(gimli::Error::NoEntryAtGivenOffset)?;
        if let Some(unit) = self.units.lock().expect("unit cache").get(&start) {
            return Ok(unit.clone());
        }
        let header = self.dwarf.debug_info.header_from_offset(start)?;
        let unit = self.dwarf.unit(header)?;
        let names = qualified_names(&self.dwarf, &unit)?;
        let data = Arc::new(UnitData { unit, names });
        self.units
            .lock()
            .expect("unit cache")
            .insert(start, data.clone());
        Ok(data)
    }

    /// The decoded type at `id` (a `.debug_info` offset).
    pub fn get(&self, id: TypeId) -> Result<Arc<TypeInfo>, TypeError> {
        if let Some(info) = self.types.lock().expect("type cache").get(&id) {
            return Ok(info.clone());
        }
        let nesting = NESTING.get();
        if nesting >= MAX_NESTING {
            return Err(TypeError::TooDeep(id));
        }
        NESTING.set(nesting + 1);
        let decoded = self.decode(id);
        NESTING.set(nesting);
        let info = Arc::new(decoded?);
        self.types
            .lock()
            .expect("type cache")
            .insert(id, info.clone());
        Ok(info)
    }

    fn decode(&self, id: TypeId) -> Result<TypeInfo, TypeError> {
        let data = self.unit_of(DebugInfoOffset(id))?;
        let unit = &data.unit;
        let offset = DebugInfoOffset(id)
            .to_unit_offset(&unit.header)
            .ok_or(gimli::Error::NoEntryAtGivenOffset)?;
        let mut tree = unit.entries_tree(Some(offset))?;
        let root = tree.root()?;
        let entry = root.entry();
        let name = match data.names.get(&offset) {
            Some(name) => name.clone(),
            None => self.name_of(unit, entry).unwrap_or_default(),
        };
        let size = udata(entry.attr_value(gimli::DW_AT_byte_size)?).unwrap_or(0);
        let type_ref = |entry: &gimli::DebuggingInformationEntry<'_, '_, Reader>| {
            entry
                .attr_value(gimli::DW_AT_type)
                .ok()
                .flatten()
                .and_then(|value| global(unit, value))
        };
        let kind = match entry.tag() {
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => TypeKind::Pointer {
                pointee: type_ref(entry),
            },
            gimli::DW_TAG_typedef => {
                return match type_ref(entry) {
                    Some(target) => Ok((*self.get(target)?).clone()),
                    None => Ok(TypeInfo {
                        name,
                        size,
                        kind: TypeKind::Other,
                    }),
                };
            }
            gimli::DW_TAG_base_type => {
                let encoding = match entry.attr_value(gimli::DW_AT_encoding)? {
                    Some(AttributeValue::Encoding(encoding)) => match encoding {
                        gimli::DW_ATE_signed => BaseEncoding::Signed,
                        gimli::DW_ATE_boolean => BaseEncoding::Bool,
                        gimli::DW_ATE_UTF => BaseEncoding::Char,
                        gimli::DW_ATE_float => BaseEncoding::Float,
                        _ => BaseEncoding::Unsigned,
                    },
                    _ => BaseEncoding::Unsigned,
                };
                TypeKind::Base { encoding }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                let mut members = Vec::new();
                let mut variants = None;
                let mut children = root.children();
                while let Some(child) = children.next()? {
                    match child.entry().tag() {
                        gimli::DW_TAG_member => {
                            if let Some(member) = self.member(unit, child.entry(), &type_ref)? {
                                members.push(member);
                            }
                        }
                        gimli::DW_TAG_variant_part => {
                            variants = Some(self.variant_part(unit, child, &type_ref)?);
                        }
                        _ => {}
                    }
                }
                let path = super::names::without_generics(&name);
                let is_state_machine = path.rsplit("::").next().is_some_and(|last| {
                    last.starts_with("{async_fn_env#") || last.starts_with("{async_block_env#")
                });
                match variants {
                    Some((discriminant, variants)) if is_state_machine => TypeKind::StateMachine {
                        discriminant,
                        states: self.states(&variants)?,
                    },
                    variants => TypeKind::Struct { members, variants },
                }
            }
            _ => TypeKind::Other,
        };
        Ok(TypeInfo { name, size, kind })
    }

    fn name_of(
        &self,
        unit: &gimli::Unit<Reader>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Reader>,
    ) -> Option<String> {
        let value = entry.attr_value(gimli::DW_AT_name).ok()??;
        let name = self.dwarf.attr_string(unit, value).ok()?;
        Some(name.to_string_lossy().ok()?.into_owned())
    }

    fn member(
        &self,
        unit: &gimli::Unit<Reader>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Reader>,
        type_ref: &dyn Fn(&gimli::DebuggingInformationEntry<'_, '_, Reader>) -> Option<TypeId>,
    ) -> Result<Option<Member>, TypeError> {
        let Some(name) = self.name_of(unit, entry) else {
            return Ok(None);
        };
        let offset = udata(entry.attr_value(gimli::DW_AT_data_member_location)?).unwrap_or(0);
        Ok(Some(Member {
            name,
            offset,
            ty: type_ref(entry),
        }))
    }

    fn variant_part(
        &self,
        unit: &gimli::Unit<Reader>,
        node: gimli::EntriesTreeNode<'_, '_, '_, Reader>,
        type_ref: &dyn Fn(&gimli::DebuggingInformationEntry<'_, '_, Reader>) -> Option<TypeId>,
    ) -> Result<(Field, Vec<Variant>), TypeError> {
        let discriminant_at = match node.entry().attr_value(gimli::DW_AT_discr)? {
            Some(AttributeValue::UnitRef(offset)) => Some(offset),
            _ => None,
        };
        let mut field = Field { offset: 0, size: 0 };
        let mut variants = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            match entry.tag() {
                gimli::DW_TAG_member if Some(entry.offset()) == discriminant_at => {
                    let offset =
                        udata(entry.attr_value(gimli::DW_AT_data_member_location)?).unwrap_or(0);
                    let size = type_ref(entry)
                        .and_then(|ty| self.get(ty).ok())
                        .map_or(1, |ty| ty.size);
                    field = Field { offset, size };
                }
                gimli::DW_TAG_variant => {
                    let discriminant = udata(entry.attr_value(gimli::DW_AT_discr_value)?);
                    let mut members = child.children();
                    if let Some(member) = members.next()? {
                        let entry = member.entry();
                        variants.push(Variant {
                            discriminant,
                            name: self.name_of(unit, entry).unwrap_or_default(),
                            ty: type_ref(entry),
                            offset: udata(entry.attr_value(gimli::DW_AT_data_member_location)?)
                                .unwrap_or(0),
                            // The await's location is on the variant member, not its type.
                            file: self.decl_file(unit, entry),
                            line: udata(entry.attr_value(gimli::DW_AT_decl_line)?).unwrap_or(0),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok((field, variants))
    }

    /// A state machine's variants: names `0`, `1`, ... whose types are `Unresumed`,
    /// `Suspend0`, ...; the locals are the members of those types.
    fn states(&self, variants: &[Variant]) -> Result<Vec<State>, TypeError> {
        let mut states = Vec::with_capacity(variants.len());
        for variant in variants {
            let (name, members) = match variant.ty {
                Some(ty) => {
                    let info = self.get(ty)?;
                    let short = info.name.rsplit("::").next().unwrap_or_default().to_owned();
                    let members = match &info.kind {
                        TypeKind::Struct { members, .. } => members.clone(),
                        _ => Vec::new(),
                    };
                    (short, members)
                }
                None => (String::new(), Vec::new()),
            };
            let awaitee = members.iter().find(|m| m.name == "__awaitee").cloned();
            let mut locals: Vec<Member> = Vec::new();
            for member in members {
                if member.name != "__awaitee" && !locals.iter().any(|l| l.name == member.name) {
                    locals.push(member);
                }
            }
            states.push(State {
                discriminant: variant.discriminant.unwrap_or(u64::MAX),
                name,
                file: variant.file.clone(),
                line: variant.line,
                awaitee,
                locals,
            });
        }
        Ok(states)
    }

    fn decl_file(
        &self,
        unit: &gimli::Unit<Reader>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Reader>,
    ) -> Option<String> {
        let index = udata(entry.attr_value(gimli::DW_AT_decl_file).ok()?)?;
        file_path(&self.dwarf, unit, index)
    }

    /// Follows `path` (member names, or variant names of enums) from `ty`, adding offsets:
    /// `["core", "stage", "stage", "value", "Running", "__0"]` from a task `Cell<T, S>`.
    /// Single-member newtypes on the way (tokio's loom `UnsafeCell(std::cell::UnsafeCell)`)
    /// are stepped through when they lack the next name.
    pub fn offset_of(&self, mut ty: TypeId, path: &[&str]) -> Option<(u64, TypeId)> {
        const MAX_NEWTYPES: usize = 4;
        let mut offset = 0;
        for step in path {
            let mut newtypes = 0;
            loop {
                let info = self.get(ty).ok()?;
                if let Some(member) = info.member(step) {
                    offset += member.offset;
                    ty = member.ty?;
                } else if let Some(variant) = info.variant(step) {
                    offset += variant.offset;
                    ty = variant.ty?;
                } else if let TypeKind::Struct {
                    members,
                    variants: None,
                } = &info.kind
                    && let [only] = members.as_slice()
                    && newtypes < MAX_NEWTYPES
                {
                    newtypes += 1;
                    offset += only.offset;
                    ty = only.ty?;
                    continue;
                } else {
                    return None;
                }
                break;
            }
        }
        Some((offset, ty))
    }
}

/// A constant, or a file index, attribute's value.
pub(super) fn udata<R: gimli::Reader>(value: Option<AttributeValue<R>>) -> Option<u64> {
    match value? {
        AttributeValue::Udata(v) => Some(v),
        AttributeValue::Data1(v) => Some(v.into()),
        AttributeValue::Data2(v) => Some(v.into()),
        AttributeValue::Data4(v) => Some(v.into()),
        AttributeValue::Data8(v) => Some(v),
        AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        AttributeValue::FileIndex(v) => Some(v),
        _ => None,
    }
}

/// The path of file `index` (a DW_AT_decl_file) in `unit`'s line program.
pub(super) fn file_path<R: gimli::Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    index: u64,
) -> Option<String> {
    let program = unit.line_program.as_ref()?;
    let header = program.header();
    let file = header.file(index)?;
    let mut path = String::new();
    if let Some(directory) = file.directory(header) {
        let directory = dwarf.attr_string(unit, directory).ok()?;
        path.push_str(&directory.to_string_lossy().ok()?);
    }
    let name = dwarf.attr_string(unit, file.path_name()).ok()?;
    let name = name.to_string_lossy().ok()?;
    let joined = |directory: &str, name: &str| match (name.starts_with('/'), directory) {
        (true, _) | (false, "") => name.to_owned(),
        (false, directory) => format!("{}/{name}", directory.trim_end_matches('/')),
    };
    let relative = joined(&path, &name);
    // A directory relative to where the compiler ran (`demo/src/bin`): anchored there.
    match unit
        .comp_dir
        .as_ref()
        .and_then(|dir| dir.to_string_lossy().ok())
    {
        Some(comp_dir) if !relative.starts_with('/') => Some(joined(&comp_dir, &relative)),
        _ => Some(relative),
    }
}

/// A reference attribute as a `.debug_info` offset.
fn global(unit: &gimli::Unit<Reader>, value: AttributeValue<Reader>) -> Option<TypeId> {
    match value {
        AttributeValue::UnitRef(offset) => offset
            .to_debug_info_offset(&unit.header)
            .map(|offset| offset.0),
        AttributeValue::DebugInfoRef(offset) => Some(offset.0),
        _ => None,
    }
}

/// Qualified names of a unit's named types (namespaces and enclosing types prefixed).
pub(super) fn qualified_names<R: gimli::Reader<Offset = usize>>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
) -> Result<HashMap<UnitOffset, String>, gimli::Error> {
    let mut names = HashMap::new();
    let mut path: Vec<(isize, String)> = Vec::new();
    let mut depth = 0isize;
    let mut entries = unit.entries();
    while let Some((delta, entry)) = entries.next_dfs()? {
        depth += delta;
        while path.last().is_some_and(|(d, _)| *d >= depth) {
            path.pop();
        }
        if !matches!(
            entry.tag(),
            gimli::DW_TAG_namespace
                | gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_enumeration_type
        ) {
            continue;
        }
        let Some(value) = entry.attr_value(gimli::DW_AT_name)? else {
            continue;
        };
        let name = dwarf
            .attr_string(unit, value)?
            .to_string_lossy()?
            .into_owned();
        if entry.tag() != gimli::DW_TAG_namespace {
            let mut qualified = String::new();
            for (_, part) in &path {
                qualified.push_str(part);
                qualified.push_str("::");
            }
            qualified.push_str(&name);
            names.insert(entry.offset(), qualified);
        }
        path.push((depth, name));
    }
    Ok(names)
}
