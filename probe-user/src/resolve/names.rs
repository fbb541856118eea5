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

/// Crates whose functions are machinery under the program's own code, not the line to point
/// at: the standard library, tokio, and the usual futures and locking crates.
const LIBRARIES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "tokio",
    "parking_lot",
    "parking_lot_core",
    "futures",
    "futures_util",
    "futures_executor",
];

/// Whether a demangled function name is a library's ([`LIBRARIES`]) or C's (no Rust path),
/// rather than the program's own: `<myapp::Listener>::run` is the program's,
/// `<core::pin::Pin<P> as core::future::Future>::poll` is not.
pub fn is_library_function(name: &str) -> bool {
    match name.trim_start_matches('<').split_once("::") {
        Some((krate, _)) => LIBRARIES.contains(&krate),
        None => true,
    }
}

/// Whether a demangled function name is the runtime's scheduling machinery, which polls the
/// tasks' futures: the program's frames just inside it are a future's own.
pub fn is_runtime_function(name: &str) -> bool {
    name.trim_start_matches('<').starts_with("tokio::runtime::")
}

/// The name users see for a task's future type:
/// - `app::handler::{async_fn_env#0}` (DWARF) or `app::handler::{closure#0}` (v0) -> `app::handler`
/// - `app::main::{async_block_env#1}` -> `app::main::{async block#1}`
/// - `tokio::runtime::blocking::task::BlockingTask<F>` -> `blocking: <name of F>`
pub fn task_name_from_type(type_name: &str) -> String {
    task_name_with(type_name, &|_| None)
}

/// [`task_name_from_type`], with `{impl#N}` resolved by `self_type` (see [`readable`]).
pub fn task_name_with(type_name: &str, self_type: &dyn Fn(&str) -> Option<String>) -> String {
    const BLOCKING: &str = "tokio::runtime::blocking::task::BlockingTask<";
    if let Some(inner) = type_name
        .strip_prefix(BLOCKING)
        .and_then(|t| t.strip_suffix('>'))
    {
        return format!("blocking: {}", task_name_with(inner, self_type));
    }
    let (path, _) = split_path(type_name);
    // An async fn's future is named after the fn: DWARF calls it `{async_fn_env#N}`, v0 names
    // `{closure#N}`, legacy names `{{closure}}`.
    let path = match path.rsplit_once("::") {
        Some((head, last))
            if [
                "{async_fn_env#",
                "{closure#",
                "{closure_env#",
                "{{closure}}",
            ]
            .iter()
            .any(|prefix| last.starts_with(prefix)) =>
        {
            head
        }
        _ => path.as_str(),
    };
    readable(path, self_type)
}

/// The function a state machine type is the future of, without generic arguments:
/// `tokio::sync::mutex::{impl#10}::lock::{async_fn_env#0}<u64>` -> `tokio::sync::mutex::Mutex::lock`
/// (when `self_type` knows `{impl#10}`); `app::main::{async_block_env#1}` -> `app::main::{async block#1}`.
pub fn function_name(type_name: &str, self_type: &dyn Fn(&str) -> Option<String>) -> String {
    readable(&without_generics(type_name), self_type)
}

/// A name as a person reads it, every path in it (generic arguments too) rewritten:
/// `{impl#N}` becomes the type the impl is for (`self_type` knows them by the impl's path, e.g.
/// `app::server::{impl#0}` -> `app::server::Listener`), the `{async_fn#N}` namespace of an async
/// fn's body and the `{async_fn_env#N}` that ends a future's name go, and the compiler's
/// `{async_block_env#N}` and `{closure_env#N}` read `{async block}` and `{closure}` (numbered
/// from the second: `{async block#1}`).
pub fn readable(name: &str, self_type: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start = 0;
    for (index, c) in name.char_indices() {
        if matches!(
            c,
            '<' | '>' | '(' | ')' | '[' | ']' | ',' | ' ' | '&' | '*' | ';'
        ) {
            out.push_str(&readable_path(&name[start..index], self_type));
            out.push(c);
            start = index + c.len_utf8();
        }
    }
    out.push_str(&readable_path(&name[start..], self_type));
    out
}

/// One path of [`readable`]: segments separated by `::`, no generic arguments.
fn readable_path(path: &str, self_type: &dyn Fn(&str) -> Option<String>) -> String {
    if !path.contains('{') {
        return path.to_owned();
    }
    let segments: Vec<&str> = path.split("::").collect();
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        if segment.starts_with("{impl#")
            && let Some(ty) = self_type(&segments[..=index].join("::"))
        {
            // The self type is a whole path (or `<A as B>`): it replaces the module path too.
            out = vec![ty];
            continue;
        }
        out.extend(readable_segment(segment, index + 1 == segments.len()));
    }
    out.join("::")
}

/// A compiler-made path segment in words, or None to leave it out.
fn readable_segment(segment: &str, last: bool) -> Option<String> {
    let number = |prefix: &str| -> Option<u32> {
        segment
            .strip_prefix(prefix)?
            .strip_suffix('}')?
            .parse()
            .ok()
    };
    let counted = |what: &str, n: u32| match n {
        0 => format!("{{{what}}}"),
        n => format!("{{{what}#{n}}}"),
    };
    // The namespace of an async fn's body: what is in it belongs to the fn.
    if number("{async_fn#").is_some() {
        return None;
    }
    if number("{async_fn_env#").is_some() && last {
        return None;
    }
    if let Some(n) = number("{async_block_env#").or_else(|| number("{async_block#")) {
        return Some(counted("async block", n));
    }
    if let Some(n) = number("{closure_env#").or_else(|| number("{closure#")) {
        return Some(counted("closure", n));
    }
    Some(segment.to_owned())
}

/// The type an impl block is for, to stand for `{impl#N}` in paths, from the demangled name (no
/// hash) of a function `after` segments below the impl: `<a::B<u8>>::f::{closure#0}` (v0) or
/// `a::B<T>::f::{{closure}}` (legacy, `after` 2) -> `a::B`; `<a::B as c::D>::f` -> `<a::B as c::D>`.
pub fn impl_self_type(function: &str, after: usize) -> Option<String> {
    if let Some(rest) = function.strip_prefix('<') {
        let inner = &rest[..matching_close(rest)?];
        return Some(match inner.split_once(" as ") {
            Some((ty, tr)) => format!("<{} as {}>", without_generics(ty), without_generics(tr)),
            None => without_generics(inner),
        });
    }
    let path = without_generics(function);
    let segments: Vec<&str> = path.split("::").collect();
    let kept = segments.len().checked_sub(after).filter(|&kept| kept > 0)?;
    Some(segments[..kept].join("::"))
}

/// tokio's own tasks, which the program did not spawn itself: a blocking task running tokio's
/// code (a worker's loop, a file or stdio operation, a DNS lookup) or a runtime future.
pub fn is_tokio_internal(task_name: &str) -> bool {
    match task_name.strip_prefix("blocking: ") {
        Some(inner) => inner.trim_start_matches('<').starts_with("tokio::"),
        None => task_name
            .trim_start_matches('<')
            .starts_with("tokio::runtime::"),
    }
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

    #[test]
    fn function_names() {
        let none = |_: &str| None;
        assert_eq!(
            function_name("app::handler::{async_fn_env#0}", &none),
            "app::handler"
        );
        assert_eq!(
            function_name(
                "tokio::sync::mutex::{impl#10}::lock::{async_fn_env#0}<u64>",
                &none
            ),
            "tokio::sync::mutex::{impl#10}::lock"
        );
        assert_eq!(
            function_name("app::main::{async_block_env#1}", &none),
            "app::main::{async block#1}"
        );
        assert_eq!(
            function_name("app::main::{async_fn#0}::{async_block_env#0}", &none),
            "app::main::{async block}"
        );
        assert_eq!(
            function_name("tokio::time::sleep::Sleep", &none),
            "tokio::time::sleep::Sleep"
        );
    }

    fn listener(key: &str) -> Option<String> {
        match key {
            "myserver::server::{impl#0}" => Some("myserver::server::Listener".to_owned()),
            "myserver::{impl#2}" => Some("<myserver::Handler as myserver::Service>".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn impls_read_as_their_types() {
        assert_eq!(
            task_name_with(
                "myserver::server::{impl#0}::run::{async_fn#0}::{async_block_env#0}",
                &listener
            ),
            "myserver::server::Listener::run::{async block}"
        );
        assert_eq!(
            task_name_with("myserver::{impl#2}::call::{async_fn_env#0}", &listener),
            "<myserver::Handler as myserver::Service>::call"
        );
        // Unknown impls stay as the compiler named them.
        assert_eq!(
            function_name("app::{impl#3}::f::{async_fn_env#0}<u8>", &listener),
            "app::{impl#3}::f"
        );
        assert_eq!(
            readable(
                "core::future::poll_fn::PollFn<myserver::server::{impl#0}::run::{async_fn#0}::{closure_env#1}>",
                &listener
            ),
            "core::future::poll_fn::PollFn<myserver::server::Listener::run::{closure#1}>"
        );
    }

    #[test]
    fn self_types_from_method_names() {
        assert_eq!(
            impl_self_type("<myserver::server::Listener>::run::{closure#0}", 2).as_deref(),
            Some("myserver::server::Listener")
        );
        assert_eq!(
            impl_self_type("tokio::sync::mutex::Mutex<T>::lock::{{closure}}", 2).as_deref(),
            Some("tokio::sync::mutex::Mutex")
        );
        assert_eq!(
            impl_self_type("<tokio::sync::mutex::Mutex<u64>>::lock::{closure#0}", 2).as_deref(),
            Some("tokio::sync::mutex::Mutex")
        );
        assert_eq!(
            impl_self_type("<app::Job<u8> as core::future::future::Future>::poll", 1).as_deref(),
            Some("<app::Job as core::future::future::Future>")
        );
        assert_eq!(impl_self_type("main::{{closure}}", 2), None);
    }

    #[test]
    fn tokio_internal_tasks() {
        assert!(is_tokio_internal(
            "blocking: tokio::runtime::scheduler::multi_thread::worker::Launch::launch"
        ));
        assert!(is_tokio_internal("blocking: tokio::fs::read::read"));
        assert_eq!(
            task_name_from_type(
                "tokio::runtime::blocking::task::BlockingTask<tokio::fs::metadata::metadata::{async_fn#0}::{closure_env#0}<&str>>"
            ),
            "blocking: tokio::fs::metadata::metadata"
        );
        assert!(is_tokio_internal(
            "tokio::runtime::blocking::task::BlockingTask<T>"
        ));
        assert!(!is_tokio_internal("blocking: app::load"));
        assert!(!is_tokio_internal("app::handler"));
        // A sleep the program spawned is its own task.
        assert!(!is_tokio_internal("tokio::time::sleep::Sleep"));
    }
}
