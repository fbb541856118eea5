//! Facts about the running kernel's own types, from its BTF (`/sys/kernel/btf/vmlinux`):
//! where the programs read a thread's CPU time.

use std::path::Path;

use btf_rs::{Btf, Type};

/// The running kernel's type information.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum KernelTypeError {
    #[error(
        "cannot read the kernel's type information {VMLINUX_BTF} (a kernel built without CONFIG_DEBUG_INFO_BTF)"
    )]
    Btf(#[source] btf_rs::Error),
    #[error("the kernel's type information has no {0}")]
    Missing(String),
}

/// Where `task_struct.se.sum_exec_runtime` lies: a thread's CPU time by its task clock, which
/// the scheduler brings up to date at every context switch and tick, and which leaves out
/// the time a hypervisor ran something else on the virtual CPU (steal time).
pub fn task_cpu_time_offset() -> Result<u64, KernelTypeError> {
    let btf = Btf::from_file(Path::new(VMLINUX_BTF)).map_err(KernelTypeError::Btf)?;
    offset_of(&btf, "task_struct", &["se", "sum_exec_runtime"])
}

/// The byte offset of the member at `path` (members of members) in struct `name`.
fn offset_of(btf: &Btf, name: &str, path: &[&str]) -> Result<u64, KernelTypeError> {
    let missing = |what: String| KernelTypeError::Missing(what);
    let mut current = btf
        .resolve_types_by_name(name)
        .map_err(|_| missing(format!("struct {name}")))?
        .into_iter()
        .find_map(|found| match found {
            Type::Struct(found) => Some(found),
            _ => None,
        })
        .ok_or_else(|| missing(format!("struct {name}")))?;
    let mut bits = 0u64;
    for (depth, member_name) in path.iter().enumerate() {
        let member = current
            .members
            .iter()
            .find(|member| {
                btf.resolve_name(*member)
                    .is_ok_and(|found| found == *member_name)
            })
            .ok_or_else(|| missing(format!("{name}.{}", path[..=depth].join("."))))?;
        bits += u64::from(member.bit_offset());
        if depth + 1 < path.len() {
            current = match btf.resolve_chained_type(member) {
                Ok(Type::Struct(inner)) => inner,
                _ => {
                    return Err(missing(format!(
                        "struct {name}.{}",
                        path[..=depth].join(".")
                    )));
                }
            };
        }
    }
    Ok(bits / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel the probe runs on has BTF (its programs need it); the offset is where the
    /// scheduler keeps the field, past the task's state and scheduling fields.
    #[test]
    fn a_threads_cpu_time_is_found_in_the_running_kernel() {
        let offset = task_cpu_time_offset().expect("the running kernel's BTF");
        assert!((64..16_384).contains(&offset), "{offset}");
        assert_eq!(offset % 8, 0);
    }
}
