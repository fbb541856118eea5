//! The ELF symbol table, demangled once, and the tokio functions found in it.

use object::{Object as _, ObjectSymbol as _, SymbolKind};

use super::{SiteKind, names};

pub(super) struct Symbol {
    pub address: u64,
    pub size: u64,
    /// The mangled name without any `.llvm.NNN` suffix (what DWARF's linkage names say).
    pub raw: String,
    /// Demangled, without hashes: `<a::B>::f::<T>` (v0) or `a::B::f` (legacy).
    pub demangled: String,
}

/// Text symbols sorted by address.
pub(super) struct SymbolTable {
    symbols: Vec<Symbol>,
}

pub(super) struct PollFunction {
    pub address: u64,
    pub symbol: String,
    /// `T` of `raw::poll::<T, S>` where the name carries it (v0 mangling).
    pub generic_type: Option<String>,
}

pub(super) struct TokioFunctions {
    /// One `raw::poll` per task type, in address order.
    pub polls: Vec<PollFunction>,
    /// The waker functions and `State::transition_to_complete` (one each).
    pub singles: Vec<(SiteKind, u64)>,
    /// Per-type task-ending and spawn functions, and `rust_panic`.
    pub others: Vec<(SiteKind, u64)>,
}

impl SymbolTable {
    pub fn read(file: &object::File<'_>) -> Self {
        let mut symbols: Vec<Symbol> = file
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.address() != 0)
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                let raw = strip_llvm_suffix(name).to_owned();
                let demangled = match rustc_demangle::try_demangle(&raw) {
                    Ok(demangled) => format!("{demangled:#}"),
                    Err(_) => raw.clone(),
                };
                Some(Symbol {
                    address: symbol.address(),
                    size: symbol.size(),
                    raw,
                    demangled,
                })
            })
            .collect();
        symbols.sort_by_key(|symbol| symbol.address);
        symbols.dedup_by(|a, b| a.address == b.address && a.raw == b.raw);
        Self { symbols }
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol that starts exactly at `address` (the first, where several do).
    pub fn at(&self, address: u64) -> Option<&Symbol> {
        self.all_at(address).next()
    }

    /// Every symbol at `address`: identical-code folding gives one function several names.
    pub fn all_at(&self, address: u64) -> impl Iterator<Item = &Symbol> {
        let index = self
            .symbols
            .partition_point(|symbol| symbol.address < address);
        self.symbols[index..]
            .iter()
            .take_while(move |symbol| symbol.address == address)
    }

    pub fn tokio_functions(&self) -> TokioFunctions {
        let mut found = TokioFunctions {
            polls: Vec::new(),
            singles: Vec::new(),
            others: Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for symbol in &self.symbols {
            let (path, generics) = names::split_path(&symbol.demangled);
            let kind = match names::without_generics(&path).as_str() {
                "tokio::runtime::task::raw::poll" => {
                    if seen.insert((SiteKind::Poll, symbol.address)) {
                        found.polls.push(PollFunction {
                            address: symbol.address,
                            symbol: symbol.raw.clone(),
                            generic_type: generics.and_then(|args| names::first_generic_arg(&args)),
                        });
                    }
                    continue;
                }
                "tokio::runtime::task::raw::dealloc" => SiteKind::Dealloc,
                "tokio::runtime::task::raw::shutdown" => SiteKind::Shutdown,
                "tokio::runtime::task::waker::wake_by_val" => SiteKind::WakeByVal,
                "tokio::runtime::task::waker::wake_by_ref" => SiteKind::WakeByRef,
                "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task" => {
                    SiteKind::SpawnMultiThread
                }
                "tokio::runtime::scheduler::current_thread::Handle::spawn" => {
                    SiteKind::SpawnCurrentThread
                }
                "tokio::runtime::task::core::Cell::new" => SiteKind::CellNew,
                "tokio::runtime::task::state::State::transition_to_complete" => SiteKind::Complete,
                "rust_panic" | "__rustc::rust_panic" => SiteKind::Panic,
                _ => continue,
            };
            if !seen.insert((kind, symbol.address)) {
                continue;
            }
            match kind {
                SiteKind::WakeByVal | SiteKind::WakeByRef | SiteKind::Complete => {
                    found.singles.push((kind, symbol.address))
                }
                _ => found.others.push((kind, symbol.address)),
            }
        }
        found
    }
}

/// LLVM's ThinLTO renames local symbols `name.llvm.123456`; the suffix is not part of the name.
fn strip_llvm_suffix(name: &str) -> &str {
    match name.find(".llvm.") {
        Some(at) => &name[..at],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_llvm_suffix;

    #[test]
    fn llvm_suffixes_are_not_part_of_the_name() {
        assert_eq!(
            strip_llvm_suffix("_ZN5tokio7runtime4task3raw4poll17h0123456789abcdefE.llvm.9876"),
            "_ZN5tokio7runtime4task3raw4poll17h0123456789abcdefE"
        );
        assert_eq!(strip_llvm_suffix("plain"), "plain");
    }
}
