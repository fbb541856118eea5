//! Turning demangled symbol names and DWARF type names into the paths and task names users read.

/// Splits a demangled function name into its path without generic arguments and the generic
/// arguments of the function itself (v0 names carry them; legacy names do not):
/// `<a::B>::f::<T, U>` -> (`a::B::f`, Some(`T, U`)); `a::B::f` -> (`a::B::f`, None).
/// Trait-impl names (`<X as Tr>::f`) are returned unchanged: no tokio function we probe is one.
pub fn split_path(demangled: &str) -> (String, Option<String>) {
    if let Some(rest) = demangled.strip_prefix('<')
        && let Some(close) = matching_close(rest)
        && !rest[..close].contains(" as ")
    {
        return split_generics(&format!("{}{}", &rest[..close], &rest[close + 1..]));
    }
    split_generics(demangled)
}

/// Splits off a trailing `::<...>` list: the first `::<` whose `<` closes at the very end.
fn split_generics(path: &str) -> (String, Option<String>) {
    if path.ends_with('>') {
        for (open, _) in path.match_indices("::<") {
            let args = &path[open + 3..];
            if matching_close(args) == Some(args.len() - 1) {
                return (
                    path[..open].to_owned(),
                    Some(args[..args.len() - 1].to_owned()),
                );
            }
        }
    }
    (path.to_owned(), None)
}

/// The path with every generic argument list removed: `a::B<T>::f` -> `a::B::f`.
pub fn without_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Index of the `>` that closes an already-opened `<` in `text`.
fn matching_close(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, c) in text.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if depth == 0 => return Some(index),
            '>' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The first top-level argument of a generic argument list: `A<B, C>, D` -> `A<B, C>`.
pub fn first_generic_arg(args: &str) -> Option<String> {
    let mut depth = 0usize;
    for (index, c) in args.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return Some(args[..index].trim().to_owned()),
            _ => {}
        }
    }
    let all = args.trim();
    (!all.is_empty()).then(|| all.to_owned())
}

/// The name users see for a task's future type:
/// - `app::handler::{async_fn_env#0}` (DWARF) or `app::handler::{closure#0}` (v0) -> `app::handler`
/// - `app::main::{async_block_env#1}` -> `app::main::{async block#1}`
/// - `tokio::runtime::blocking::task::BlockingTask<F>` -> `blocking: <name of F>`
pub fn task_name_from_type(type_name: &str) -> String {
    const BLOCKING: &str = "tokio::runtime::blocking::task::BlockingTask<";
    if let Some(inner) = type_name
        .strip_prefix(BLOCKING)
        .and_then(|t| t.strip_suffix('>'))
    {
        return format!("blocking: {}", task_name_from_type(inner));
    }
    let (path, _) = split_path(type_name);
    let type_name = path.as_str();
    if let Some((head, last)) = type_name.rsplit_once("::") {
        if last.starts_with("{async_fn_env#")
            || last.starts_with("{closure#")
            || last.starts_with("{closure_env#")
            || last == "{{closure}}"
        {
            return head.to_owned();
        }
        if let Some(number) = last
            .strip_prefix("{async_block_env#")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            return format!("{head}::{{async block#{number}}}");
        }
    }
    type_name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v0_inherent_method_with_generics() {
        let (path, args) = split_path(
            "<tokio::runtime::scheduler::multi_thread::handle::Handle>::bind_new_task::<app::run::{closure#0}>",
        );
        assert_eq!(
            path,
            "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task"
        );
        assert_eq!(args.as_deref(), Some("app::run::{closure#0}"));
    }

    #[test]
    fn v0_free_function_with_nested_generics() {
        let (path, args) = split_path(
            "tokio::runtime::task::raw::poll::<tokio::runtime::blocking::task::BlockingTask<<x::Y>::f::{closure#0}>, tokio::runtime::blocking::schedule::BlockingSchedule>",
        );
        assert_eq!(path, "tokio::runtime::task::raw::poll");
        assert_eq!(
            first_generic_arg(&args.unwrap()).as_deref(),
            Some("tokio::runtime::blocking::task::BlockingTask<<x::Y>::f::{closure#0}>")
        );
    }

    #[test]
    fn legacy_names_have_no_generics() {
        assert_eq!(
            split_path("tokio::runtime::task::raw::poll"),
            ("tokio::runtime::task::raw::poll".to_owned(), None)
        );
    }

    #[test]
    fn trait_impls_are_left_alone() {
        let name = "<alloc::sync::Arc<h::Handle> as tokio::runtime::task::Schedule>::schedule";
        assert_eq!(split_path(name), (name.to_owned(), None));
    }

    #[test]
    fn generics_are_removed_for_matching() {
        assert_eq!(
            without_generics(
                "tokio::runtime::task::core::Cell<app::f::{closure#0}, alloc::sync::Arc<h::Handle>>::new"
            ),
            "tokio::runtime::task::core::Cell::new"
        );
        assert_eq!(
            without_generics("tokio::runtime::task::core::Cell<T,S>::new"),
            "tokio::runtime::task::core::Cell::new"
        );
    }

    #[test]
    fn task_names() {
        assert_eq!(
            task_name_from_type("app::handler::{async_fn_env#0}"),
            "app::handler"
        );
        assert_eq!(
            task_name_from_type("app::handler::{closure#0}"),
            "app::handler"
        );
        assert_eq!(
            task_name_from_type("app::handler::{{closure}}"),
            "app::handler"
        );
        assert_eq!(
            task_name_from_type("app::main::{async_block_env#1}"),
            "app::main::{async block#1}"
        );
        assert_eq!(
            task_name_from_type(
                "tokio::runtime::blocking::task::BlockingTask<app::load::{closure#0}>"
            ),
            "blocking: app::load"
        );
        assert_eq!(task_name_from_type("app::Custom"), "app::Custom");
        assert_eq!(
            task_name_from_type(
                "<tokio::runtime::scheduler::multi_thread::worker::Launch>::launch::{closure#0}"
            ),
            "tokio::runtime::scheduler::multi_thread::worker::Launch::launch"
        );
    }
}
