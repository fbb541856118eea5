//! Where to put a uprobe in a function so that hitting it is cheap.
//!
//! A uprobe replaces the first byte of the probed instruction with `int3`. On a hit the x86-64
//! kernel either *emulates* the displaced instruction (one trap: ~1.4 us on the test VM) or copies
//! it to the task's XOL page and *single-steps* it there (a second trap: ~6.5 us).
//! `arch_uprobe_analyze_insn()` in arch/x86/kernel/uprobes.c decides, once, at registration:
//!
//! | instruction (bytes)                                            | emulated since | commit |
//! |----------------------------------------------------------------|----------------|--------|
//! | `call rel32` (e8), `jmp rel8/rel32` (eb, e9), `jcc rel8/rel32` (70-7f, 0f 80-8f), `nop` (90 with any prefix but 66) | 2014 (3.15 era) | Oleg Nesterov's `branch_xol_ops` series (ids not found in the stored material) |
//! | `push r64`: 50-57, or 41 50-57 for r8-r15 (no other prefix)   | 4.16 | e7ed9d9bd037 "uprobes/x86: Emulate push insns for uprobe on x86" (Yonghong Song; tip 2017-12-11, after 4.15-rc1; 4.14 lacks it) |
//! | the kernel's own NOPs `x86_nops[1..=8]`: 66 90, 0f 1f 00, 0f 1f 40 00, 0f 1f 44 00 00, 66 0f 1f 44 00 00, 0f 1f 80 00000000, 0f 1f 84 00 00000000 | 6.16 | 610f6e14c29d "uprobes/x86: Add support to emulate NOP instructions" (Jiri Olsa; merged for 6.16) |
//! | a 5-byte NOP becomes a `call` to a trampoline + uprobe syscall (no trap at all) | 6.18 | ba2bfc97b462 "uprobes/x86: Add support to optimize uprobes", 7c2bfc183b05 "Accept more NOP forms" |
//!
//! Everything else is single-stepped, notably `sub $imm,%rsp`, `mov`, `lea`, `xor`. Emulating
//! `mov reg,reg` and `sub $imm32,reg` was proposed in Nov 2025 (Jiri Olsa, RFC "uprobe/x86: Add
//! support to emulate mov reg,reg / sub imm,reg instructions"), not merged; it would not cover
//! rustc's `sub $imm8,%rsp` (48 83 ec) anyway. The kernel refuses to probe at all (registration
//! fails) instructions with a lock, cs, ds, es or ss prefix (`is_prefix_bad`), and 66-prefixed
//! branches — `66 90` too before 6.16. That includes LLVM's loop-alignment padding
//! `66 .. 2e 0f 1f 84 ..` (`data16 cs nopw`).
//!
//! min_kernel: push emulation (4.16) is older than 6.1, so every supported kernel has it. The
//! multi-byte NOPs are emulated only from 6.16: on older kernels `0f 1f ..` is single-stepped and
//! `66 90` is refused. [`classify`] assumes the running kernel (6.18).
//!
//! Probing past the entry. The kernel takes any file offset and decodes whatever bytes are there:
//! it does not check that the offset starts an instruction, and an `int3` written into the middle
//! of one corrupts the program. Offsets here come from decoding forward from the symbol's start,
//! so they are instruction boundaries. The probe fires each time its instruction runs, so the
//! instruction chosen must run exactly once per call: the code before it may loop (tokio's
//! `wake_by_ref` is a compare-and-swap loop from its first instructions on), but must not leave
//! the span between the entry and the probe except into a panic, and nothing after the probe may
//! branch back into that span. A uretprobe must stay at the entry:
//! `arch_uretprobe_hijack_return_addr()` swaps the word at `[rsp]` for the trampoline, which is
//! the return address only before the function pushes anything.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register as Reg, UsedRegister,
};

/// How the kernel runs the instruction a uprobe replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stepping {
    Emulated,
    SingleStepped,
}

/// A general-purpose register, numbered as the eBPF side reads it from `pt_regs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum Register {
    Rdi = 0,
    Rsi,
    Rdx,
    Rcx,
    R8,
    R9,
    Rax,
    Rbx,
    Rbp,
    R12,
    R13,
    R14,
    R15,
    R10,
    R11,
}

/// Where to probe one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Bytes from the function's start to the probed instruction (0: its first instruction).
    pub offset: u64,
    /// The register holding the function's first argument when the probed instruction runs.
    pub argument: Register,
    pub stepping: Stepping,
    /// The probed instruction, disassembled (e.g. "push rbx"), for `--explain`.
    pub instruction: String,
    /// The function's first instruction, when the probe moved past it.
    pub skipped: Option<String>,
}

/// Prologues are short: past this many instructions the argument is rarely still in a register.
/// (`wake_by_ref`'s first emulated instruction reached once per call is its 41st.)
const MAX_WALK: usize = 64;
/// A panic path is a few instructions setting up the call that does not return.
const MAX_DEAD_END: usize = 16;
/// Bound on the code searched for branches back into the prologue, against a bad symbol size.
const MAX_FUNCTION_BYTES: usize = 64 * 1024;

/// `x86_nops[1..=8]` on x86-64 (arch/x86/include/asm/nops.h): the NOPs emulated since 6.16.
const KERNEL_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Legacy prefixes, in the order the kernel's decoder skips them.
const PREFIXES: [u8; 11] = [
    0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3,
];
/// es, cs, ss, ds and lock: the kernel refuses to probe instructions carrying them.
const REFUSED_PREFIXES: [u8; 5] = [0x26, 0x2e, 0x36, 0x3e, 0xf0];

impl Entry {
    /// A probe on the function's first instruction instead (what a return probe needs): a
    /// probe moved past it was moved because the kernel single-steps it.
    pub fn at_start(&self) -> Entry {
        match &self.skipped {
            Some(first) => Entry {
                offset: 0,
                argument: Register::Rdi,
                stepping: Stepping::SingleStepped,
                instruction: first.clone(),
                skipped: None,
            },
            None => self.clone(),
        }
    }
}

/// How the kernel would run the instruction at the start of `code` (which is at address `ip`),
/// and the instruction as text. None when it does not decode.
pub fn classify(code: &[u8], ip: u64) -> Option<(Stepping, String)> {
    let instruction = Decoder::with_ip(64, code, ip, DecoderOptions::NONE).decode();
    if instruction.is_invalid() {
        return None;
    }
    Some((
        stepping(&instruction, &code[..instruction.len()]),
        text(&instruction),
    ))
}

/// Whether an instruction starts `offset` bytes into the function whose code starts at `code`
/// (address `ip`), decoding from its start as it runs: the kernel writes its `int3` wherever it
/// is told, so a probe offset that is no boundary corrupts an instruction.
pub fn starts_instruction(code: &[u8], ip: u64, offset: u64) -> bool {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .take_while(|instruction| !instruction.is_invalid() && instruction.ip() - ip <= offset)
        .any(|instruction| instruction.ip() - ip == offset)
}

/// The cheapest place to probe the function whose code is `code` (address `ip`; the whole
/// function where its size is known, which lets panic paths at its end be recognized) and whose
/// first argument arrives in %rdi: its entry when the first instruction is emulated; otherwise the
/// first emulated instruction run exactly once on every call, if the argument is still in some
/// register there; otherwise the entry, single-stepped. Scans at most a few dozen instructions.
pub fn cheapest(code: &[u8], ip: u64) -> Option<Entry> {
    let (stepping, first) = classify(code, ip)?;
    let entry = Entry {
        offset: 0,
        argument: Register::Rdi,
        stepping,
        instruction: first,
        skipped: None,
    };
    if stepping == Stepping::Emulated {
        return Some(entry);
    }
    Some(match past_prologue(code, ip) {
        Some((offset, argument, instruction)) => Entry {
            offset,
            argument,
            stepping: Stepping::Emulated,
            instruction,
            skipped: Some(entry.instruction),
        },
        None => entry,
    })
}

/// The first emulated instruction run exactly once on every call, with a register still holding
/// the argument there: `(offset, register, text)`. The code before it may branch and loop within
/// itself; calls, returns and indirect jumps there end the search.
fn past_prologue(code: &[u8], ip: u64) -> Option<(u64, Register, String)> {
    let mut info = InstructionInfoFactory::new();
    let mut holders = vec![Register::Rdi];
    // Targets of the branches walked so far.
    let mut targets = Vec::new();
    let mut falls_through = true;
    // Every direct branch of the function, decoded once for all the candidates.
    let branches = direct_branches(code, ip);
    let decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for instruction in decoder.into_iter().take(MAX_WALK) {
        if instruction.is_invalid() {
            return None;
        }
        let here = instruction.ip();
        let bytes = &code[(here - ip) as usize..][..instruction.len()];
        let flow = instruction.flow_control();
        // At a call the argument registers are intact; a branch is emulated too.
        let candidate = matches!(
            flow,
            FlowControl::Next
                | FlowControl::Call
                | FlowControl::ConditionalBranch
                | FlowControl::UnconditionalBranch
        ) && stepping(&instruction, bytes) == Stepping::Emulated;
        let reached = falls_through || targets.contains(&here);
        if candidate && reached && runs_once(code, ip, here, &targets, &branches) {
            return Some((here - ip, preferred(&holders), text(&instruction)));
        }
        match flow {
            FlowControl::Next => falls_through = true,
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                let target = direct_target(&instruction)?;
                if target < ip {
                    return None;
                }
                targets.push(target);
                falls_through = flow == FlowControl::ConditionalBranch;
            }
            _ => return None,
        }
        if instruction.is_save_restore_instruction() {
            return None;
        }
        // A copy of the argument that a branch before it may jump over is not on every path.
        let copies = targets.iter().all(|&target| target <= here);
        track(
            &mut holders,
            &instruction,
            info.info(&instruction).used_registers(),
            copies,
        );
        if holders.is_empty() {
            return None;
        }
    }
    None
}

/// Whether the instruction at `probe` runs once per call, given the `targets` of the branches
/// between the entry and it: each of them lands at or before it, or in a panic; and no branch
/// of the function's (`(source, target)`) from it onwards goes back to `(entry, probe]` (a jump
/// to the entry itself runs the entry's probe again as well).
fn runs_once(
    code: &[u8],
    entry: u64,
    probe: u64,
    targets: &[u64],
    branches: &[(u64, u64)],
) -> bool {
    let leaves = targets
        .iter()
        .any(|&target| target > probe && !dead_end(code, entry, target));
    let loops_back = branches
        .iter()
        .any(|&(source, target)| source >= probe && (entry + 1..=probe).contains(&target));
    !leaves && !loops_back
}

/// `(source, target)` of every direct branch in the function.
fn direct_branches(code: &[u8], entry: u64) -> Vec<(u64, u64)> {
    let code = &code[..code.len().min(MAX_FUNCTION_BYTES)];
    Decoder::with_ip(64, code, entry, DecoderOptions::NONE)
        .into_iter()
        .filter_map(|instruction| Some((instruction.ip(), direct_target(&instruction)?)))
        .collect()
}

/// Whether the code at `target` cannot return: straight-line code ending in a trap, or in a call
/// that is the function's last instruction (a call to a panic, which nothing follows).
fn dead_end(code: &[u8], entry: u64, target: u64) -> bool {
    let end = entry + code.len() as u64;
    let Some(from) = target.checked_sub(entry).filter(|_| target < end) else {
        return false;
    };
    let decoder = Decoder::with_ip(64, &code[from as usize..], target, DecoderOptions::NONE);
    for instruction in decoder.into_iter().take(MAX_DEAD_END) {
        match instruction.flow_control() {
            _ if instruction.is_invalid() => return false,
            FlowControl::Next => {}
            FlowControl::Call | FlowControl::IndirectCall => {
                if instruction.next_ip() == end {
                    return true;
                }
            }
            FlowControl::Exception | FlowControl::Interrupt => return true,
            _ => return false,
        }
    }
    false
}

fn direct_target(instruction: &Instruction) -> Option<u64> {
    matches!(
        instruction.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
    .then(|| instruction.near_branch_target())
}

/// Updates the registers holding the argument across one instruction: a full `mov r64, r64` from
/// a holder adds its destination (where `copies` are trusted); any other write to a register,
/// partial or implicit, removes it.
fn track(
    holders: &mut Vec<Register>,
    instruction: &Instruction,
    used: &[UsedRegister],
    copies: bool,
) {
    let copied_to = register_copy(instruction)
        .filter(|(_, source)| copies && holders.contains(source))
        .map(|(destination, _)| destination);
    for register in used {
        let written = !matches!(
            register.access(),
            OpAccess::None | OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess
        );
        if let (true, Some(ours)) = (written, ours(register.register().full_register())) {
            holders.retain(|holder| *holder != ours);
        }
    }
    if let Some(destination) = copied_to.filter(|d| !holders.contains(d)) {
        holders.push(destination);
    }
}

/// `mov r64, r64` (either encoding) between two registers we can name: `(destination, source)`.
fn register_copy(instruction: &Instruction) -> Option<(Register, Register)> {
    let is_copy = matches!(instruction.code(), Code::Mov_rm64_r64 | Code::Mov_r64_rm64)
        && instruction.op0_kind() == OpKind::Register
        && instruction.op1_kind() == OpKind::Register;
    if !is_copy {
        return None;
    }
    Some((
        ours(instruction.op0_register())?,
        ours(instruction.op1_register())?,
    ))
}

/// %rdi if it still holds the argument (what the eBPF side reads by default), else the first
/// holder in `Register` order.
fn preferred(holders: &[Register]) -> Register {
    if holders.contains(&Register::Rdi) {
        return Register::Rdi;
    }
    *holders
        .iter()
        .min_by_key(|register| **register as u8)
        .expect("the walk stops when no register holds the argument")
}

/// Mirrors `arch_uprobe_analyze_insn()` of kernel 6.18 (see the table at the top of this file).
fn stepping(instruction: &Instruction, bytes: &[u8]) -> Stepping {
    if emulated(instruction, bytes) {
        Stepping::Emulated
    } else {
        Stepping::SingleStepped
    }
}

fn emulated(instruction: &Instruction, bytes: &[u8]) -> bool {
    if KERNEL_NOPS.contains(&bytes) {
        return true;
    }
    let (prefixes, rex, opcode) = split_prefixes(bytes);
    if prefixes.iter().any(|p| REFUSED_PREFIXES.contains(p)) {
        return false;
    }
    let operand_size = prefixes.contains(&0x66);
    match opcode {
        // push_setup_xol_ops: one byte, or 0x41 (REX.B) and one byte; nothing else.
        [0x50..=0x57] => prefixes.is_empty() && matches!(rex, None | Some(0x41)),
        // branch_setup_xol_ops: jmp, call, jcc; it refuses 66-prefixed ones.
        [0xe8 | 0xe9 | 0xeb | 0x70..=0x7f, ..] | [0x0f, 0x80..=0x8f, ..] => !operand_size,
        // Opcode 0x90 is emulated as a jump by 0; `41 90` is `xchg r8d, eax`, not a nop.
        [0x90] => {
            !operand_size && matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Pause)
        }
        _ => false,
    }
}

/// An instruction's legacy prefixes, REX byte and the rest (opcode onwards).
fn split_prefixes(bytes: &[u8]) -> (&[u8], Option<u8>, &[u8]) {
    let count = bytes.iter().take_while(|b| PREFIXES.contains(b)).count();
    let (prefixes, rest) = bytes.split_at(count);
    match rest {
        [rex @ 0x40..=0x4f, opcode @ ..] => (prefixes, Some(*rex), opcode),
        _ => (prefixes, None, rest),
    }
}

/// Our name for a 64-bit general-purpose register (rsp, rip and the rest have none).
fn ours(register: Reg) -> Option<Register> {
    Some(match register {
        Reg::RDI => Register::Rdi,
        Reg::RSI => Register::Rsi,
        Reg::RDX => Register::Rdx,
        Reg::RCX => Register::Rcx,
        Reg::R8 => Register::R8,
        Reg::R9 => Register::R9,
        Reg::RAX => Register::Rax,
        Reg::RBX => Register::Rbx,
        Reg::RBP => Register::Rbp,
        Reg::R12 => Register::R12,
        Reg::R13 => Register::R13,
        Reg::R14 => Register::R14,
        Reg::R15 => Register::R15,
        Reg::R10 => Register::R10,
        Reg::R11 => Register::R11,
        _ => return None,
    })
}

/// Intel-style text ("push rbx", "mov [rsp+0x8],rdi") named by iced's mnemonic, so a `66 90`
/// reads "nop" as the kernel treats it (iced's formatter would print "xchg ax,ax"); it covers
/// the operand kinds prologues use.
fn text(instruction: &Instruction) -> String {
    let lock = if instruction.has_lock_prefix() {
        "lock "
    } else {
        ""
    };
    let mnemonic = format!("{:?}", instruction.mnemonic()).to_lowercase();
    let operands: Vec<String> = (0..instruction.op_count())
        .map(|operand| operand_text(instruction, operand))
        .collect();
    if operands.is_empty() {
        format!("{lock}{mnemonic}")
    } else {
        format!("{lock}{mnemonic} {}", operands.join(","))
    }
}

fn operand_text(instruction: &Instruction, operand: u32) -> String {
    match instruction.op_kind(operand) {
        OpKind::Register => register_name(instruction.op_register(operand)),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            format!("{:#x}", instruction.near_branch_target())
        }
        OpKind::Memory => memory_text(instruction),
        OpKind::Immediate8
        | OpKind::Immediate8_2nd
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => format!("{:#x}", instruction.immediate(operand)),
        _ => "?".to_owned(),
    }
}

fn memory_text(instruction: &Instruction) -> String {
    if instruction.is_ip_rel_memory_operand() {
        return format!("[{:#x}]", instruction.ip_rel_memory_address());
    }
    let mut address = String::new();
    if instruction.memory_base() != Reg::None {
        address += &register_name(instruction.memory_base());
    }
    if instruction.memory_index() != Reg::None {
        let plus = if address.is_empty() { "" } else { "+" };
        let index = register_name(instruction.memory_index());
        address += &match instruction.memory_index_scale() {
            1 => format!("{plus}{index}"),
            scale => format!("{plus}{index}*{scale}"),
        };
    }
    let displacement = instruction.memory_displacement64() as i64;
    if address.is_empty() {
        address = format!("{displacement:#x}");
    } else if displacement > 0 {
        address += &format!("+{displacement:#x}");
    } else if displacement < 0 {
        address += &format!("-{:#x}", displacement.unsigned_abs());
    }
    format!("[{address}]")
}

fn register_name(register: Reg) -> String {
    format!("{register:?}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x1000;

    fn at(code: &[u8]) -> Entry {
        cheapest(code, IP).expect("decodes")
    }

    #[test]
    fn instruction_starts_are_found_by_decoding_from_the_entry() {
        // sub rsp,0x18 (4 bytes); push rbx (1); mov rbx,rdi (3)
        let code = [0x48, 0x83, 0xec, 0x18, 0x53, 0x48, 0x89, 0xfb];
        for (offset, starts) in [(0, true), (2, false), (4, true), (5, true), (6, false)] {
            assert_eq!(
                starts_instruction(&code, IP, offset),
                starts,
                "offset {offset}"
            );
        }
        assert!(!starts_instruction(&code, IP, 8), "past the code");
    }

    #[test]
    fn jump_at_entry_is_probed_there() {
        // jmp rel32 (raw::poll's shape)
        let entry = at(&[0xe9, 0x10, 0x00, 0x00, 0x00]);
        assert_eq!(entry.offset, 0);
        assert_eq!(entry.stepping, Stepping::Emulated);
        assert_eq!(entry.argument, Register::Rdi);
        assert_eq!(entry.instruction, "jmp 0x1015");
        assert_eq!(entry.skipped, None);
    }

    #[test]
    fn push_at_entry_is_probed_there() {
        // push rbx; mov rbx,rdi
        let entry = at(&[0x53, 0x48, 0x89, 0xfb]);
        assert_eq!(
            (entry.offset, entry.stepping, entry.instruction.as_str()),
            (0, Stepping::Emulated, "push rbx")
        );
    }

    #[test]
    fn moves_to_a_call_after_a_spill() {
        // sub rsp,0x18; mov [rsp+8],rdi; call rel32
        let code = [
            0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x7c, 0x24, 0x08, 0xe8, 0, 0, 0, 0,
        ];
        let entry = at(&code);
        assert_eq!(entry.offset, 9);
        assert_eq!(entry.argument, Register::Rdi);
        assert_eq!(entry.stepping, Stepping::Emulated);
        assert_eq!(entry.instruction, "call 0x100e");
        assert_eq!(entry.skipped.as_deref(), Some("sub rsp,0x18"));
    }

    #[test]
    fn clone_waker_shape_moves_to_a_later_push_or_falls_back() {
        // mov eax,0x40; lock xadd [rdi],rax; then push rbx: rdi still holds the argument.
        let mut code = vec![0xb8, 0x40, 0, 0, 0, 0xf0, 0x48, 0x0f, 0xc1, 0x07];
        let entry = at(&[code.as_slice(), &[0x53]].concat());
        assert_eq!((entry.offset, entry.argument), (10, Register::Rdi));
        assert_eq!(entry.instruction, "push rbx");
        assert_eq!(entry.skipped.as_deref(), Some("mov eax,0x40"));
        // A retry loop instead (jne back to the xadd): its back edge runs once per try.
        code.extend([0x75, 0xf9]);
        let entry = at(&code);
        assert_eq!((entry.offset, entry.stepping), (0, Stepping::SingleStepped));
        assert_eq!(entry.instruction, "mov eax,0x40");
    }

    /// `waker::wake_by_ref` of tokio 1.54 in a release build (inspect-server, rustc 1.95): a
    /// compare-and-swap loop from its first instructions, a panic on reference-count overflow,
    /// then `test sil,sil; je` deciding whether to schedule the task. The `je` runs once per
    /// call, with the task header still in %rdi.
    #[test]
    fn wake_by_ref_is_probed_after_its_compare_and_swap_loop() {
        const WAKE_BY_REF: [u8; 192] = [
            0x48, 0x83, 0xec, 0x18, 0x48, 0x8b, 0x07, 0x48, 0x8d, 0x4c, 0x24, 0x08, 0x48, 0x8d,
            0x54, 0x24, 0x10, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xa8, 0x02, 0x75, 0x1c, 0xa8, 0x04, 0x75, 0x38, 0xa8, 0x01,
            0x75, 0x3b, 0x48, 0x85, 0xc0, 0x78, 0x76, 0x4c, 0x8d, 0x40, 0x44, 0x40, 0xb6, 0x01,
            0xeb, 0x36, 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x31, 0xf6, 0x49, 0x89, 0xc9, 0x45,
            0x31, 0xc0, 0x4d, 0x89, 0x01, 0x83, 0x7c, 0x24, 0x08, 0x01, 0x74, 0x34, 0xeb, 0x3e,
            0x66, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x31, 0xf6,
            0x49, 0x89, 0xc0, 0xeb, 0x09, 0x49, 0x89, 0xc0, 0x49, 0x83, 0xc8, 0x04, 0x31, 0xf6,
            0x48, 0xc7, 0x44, 0x24, 0x08, 0x01, 0x00, 0x00, 0x00, 0x49, 0x89, 0xd1, 0x4d, 0x89,
            0x01, 0x83, 0x7c, 0x24, 0x08, 0x01, 0x75, 0x0c, 0x4c, 0x8b, 0x44, 0x24, 0x10, 0xf0,
            0x4c, 0x0f, 0xb1, 0x07, 0x75, 0x8e, 0x40, 0x84, 0xf6, 0x74, 0x0b, 0x48, 0x8b, 0x47,
            0x10, 0x48, 0x83, 0xc4, 0x18, 0xff, 0x60, 0x08, 0x48, 0x83, 0xc4, 0x18, 0xc3, 0x48,
            0x8d, 0x3d, 0x1c, 0x5d, 0xfb, 0xff, 0x48, 0x8d, 0x15, 0x23, 0x19, 0x05, 0x00, 0xbe,
            0x2f, 0x00, 0x00, 0x00, 0xff, 0x15, 0x38, 0x52, 0x05, 0x00,
        ];
        let ip = 0x676a0;
        let entry = cheapest(&WAKE_BY_REF, ip).expect("decodes");
        assert_eq!(
            entry,
            Entry {
                offset: 0x95,
                argument: Register::Rdi,
                stepping: Stepping::Emulated,
                instruction: "je 0x67742".into(),
                skipped: Some("sub rsp,0x18".into()),
            }
        );
        // Without the function's end, the overflow check's panic is not known to be one: the
        // `js` to it could go around the probe.
        let with_more = [&WAKE_BY_REF[..], &[0x53, 0x48, 0x89, 0xfb]].concat();
        assert_eq!(cheapest(&with_more, ip).unwrap().offset, 0);
    }

    /// `sub rsp,0x18; mov rax,[rdi]; test al,2; jne OUT; lock cmpxchg [rdi],r8; jne back to the
    /// mov; push rbx; pop rbx; add rsp,0x18; ret`, then `tail`.
    fn loop_then_push(out: u8, tail: &[u8]) -> Vec<u8> {
        let head = [
            0x48, 0x83, 0xec, 0x18, 0x48, 0x8b, 0x07, 0xa8, 0x02, 0x75, out, 0xf0, 0x4c, 0x0f,
            0xb1, 0x07, 0x75, 0xf2, 0x53, 0x5b, 0x48, 0x83, 0xc4, 0x18, 0xc3,
        ];
        [&head[..], tail].concat()
    }

    #[test]
    fn a_loop_before_the_probe_is_fine_but_a_way_around_it_is_not() {
        // lea rdi,[rip]; call [rip]: a panic, the function's last instruction.
        let panic = [0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xff, 0x15, 0, 0, 0, 0];
        // The loop's exit to the panic (offset 25): the push runs once per call.
        let entry = at(&loop_then_push(14, &panic));
        assert_eq!((entry.offset, entry.argument), (18, Register::Rdi));
        assert_eq!(entry.instruction, "push rbx");
        // The exit to the `ret` (offset 24) goes around the push.
        assert_eq!(at(&loop_then_push(13, &panic)).offset, 0);
        // Code after the call: it may return.
        let returns = [&panic[..], &[0xc3]].concat();
        assert_eq!(at(&loop_then_push(14, &returns)).offset, 0);
        // ud2 ends a path as well.
        let entry = at(&loop_then_push(14, &[0x0f, 0x0b, 0xc3]));
        assert_eq!(entry.offset, 18);
    }

    #[test]
    fn follows_the_argument_into_a_callee_saved_register() {
        // mov rbx,rdi; xor edi,edi; push r14
        let entry = at(&[0x48, 0x89, 0xfb, 0x31, 0xff, 0x41, 0x56]);
        assert_eq!(entry.offset, 5);
        assert_eq!(entry.argument, Register::Rbx);
        assert_eq!(entry.instruction, "push r14");
        // The other encoding of the copy: mov rbx,rdi as 48 8b df.
        let entry = at(&[0x48, 0x8b, 0xdf, 0x31, 0xff, 0x41, 0x56]);
        assert_eq!((entry.offset, entry.argument), (5, Register::Rbx));
    }

    #[test]
    fn a_branch_every_call_reaches_is_probed() {
        // sub rsp,0x18; jne +0
        let entry = at(&[0x48, 0x83, 0xec, 0x18, 0x75, 0x00]);
        assert_eq!(
            entry,
            Entry {
                offset: 4,
                argument: Register::Rdi,
                stepping: Stepping::Emulated,
                instruction: "jne 0x1006".into(),
                skipped: Some("sub rsp,0x18".into()),
            }
        );
    }

    #[test]
    fn a_copy_of_the_argument_counts_only_if_no_branch_skips_it() {
        // sub rsp,0x18; test al,1; jne back to the test; mov rbx,rdi; xor edi,edi; push rbx:
        // the copy follows a loop, and every call makes it.
        let entry = at(&[
            0x48, 0x83, 0xec, 0x18, 0xa8, 0x01, 0x75, 0xfc, 0x48, 0x89, 0xfb, 0x31, 0xff, 0x53,
        ]);
        assert_eq!((entry.offset, entry.argument), (13, Register::Rbx));
        // sub rsp,0x18; test al,1; jne over the copy; mov rbx,rdi; xor edi,edi; test al,2; jne
        // back to the first test; push rbx: no register surely holds the argument at the push.
        let entry = at(&[
            0x48, 0x83, 0xec, 0x18, 0xa8, 0x01, 0x75, 0x03, 0x48, 0x89, 0xfb, 0x31, 0xff, 0xa8,
            0x02, 0x75, 0xf3, 0x53,
        ]);
        assert_eq!(entry.offset, 0);
    }

    #[test]
    fn an_overwritten_argument_keeps_the_entry() {
        // mov edi,1; push rbx
        let entry = at(&[0xbf, 0x01, 0, 0, 0, 0x53]);
        assert_eq!((entry.offset, entry.stepping), (0, Stepping::SingleStepped));
        // A partial write counts too: mov dil,1 (40 b7 01); push rbx.
        let entry = at(&[0x40, 0xb7, 0x01, 0x53]);
        assert_eq!(entry.offset, 0);
    }

    #[test]
    fn a_loop_back_to_the_prologue_keeps_the_entry() {
        // sub rsp,0x18; push rbx; ...; jne back to the push: it would fire on every iteration.
        let code = [0x48, 0x83, 0xec, 0x18, 0x53, 0x90, 0x75, 0xfc];
        assert_eq!(at(&code).offset, 0);
        // A jump back to the entry itself runs the prologue again too: the push is still fine.
        let code = [0x48, 0x83, 0xec, 0x18, 0x53, 0x75, 0xf9];
        assert_eq!(at(&code).offset, 4);
    }

    #[test]
    fn undecodable_code() {
        assert_eq!(cheapest(&[], IP), None);
        assert_eq!(classify(&[0x48], IP), None);
        // sub rsp,0x18 then a truncated instruction: fall back to the entry.
        assert_eq!(at(&[0x48, 0x83, 0xec, 0x18, 0x48]).offset, 0);
    }

    #[test]
    fn classifies_like_the_kernel() {
        let cases: [(&[u8], Stepping, &str); 12] = [
            (&[0x41, 0x56], Stepping::Emulated, "push r14"),
            (&[0x48, 0x53], Stepping::SingleStepped, "push rbx"),
            (
                &[0x0f, 0x1f, 0x44, 0, 0],
                Stepping::Emulated,
                "nop [rax+rax]",
            ),
            (&[0x66, 0x90], Stepping::Emulated, "nop"),
            (&[0xf3, 0x90], Stepping::Emulated, "pause"),
            (&[0x41, 0x90], Stepping::SingleStepped, "xchg r8d,eax"),
            (&[0x0f, 0x84, 0, 0, 0, 0], Stepping::Emulated, "je 0x1006"),
            (
                &[0x66, 0xe8, 0, 0, 0, 0],
                Stepping::SingleStepped,
                "call 0x1006",
            ),
            (
                &[0x48, 0x83, 0xec, 0x18],
                Stepping::SingleStepped,
                "sub rsp,0x18",
            ),
            (
                &[0xf0, 0x48, 0x0f, 0xc1, 0x07],
                Stepping::SingleStepped,
                "lock xadd [rdi],rax",
            ),
            (
                &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],
                Stepping::SingleStepped,
                "nop [rax+rax]",
            ),
            (
                &[0x48, 0x8b, 0x05, 0x10, 0, 0, 0],
                Stepping::SingleStepped,
                "mov rax,[0x1017]",
            ),
        ];
        for (code, stepping, text) in cases {
            assert_eq!(
                classify(code, IP),
                Some((stepping, text.to_owned())),
                "{code:02x?}"
            );
        }
    }
}
