//! The little BPF the media path needs, without a BPF toolchain: an assembler for short
//! straight-line programs and the `bpf(2)` commands to create maps, load a program and link it.
//!
//! Two programs use it: `steer` (sk_lookup: a media port's datagram to its thread's socket) and
//! `xdp` (a media port's frame to its thread's AF_XDP socket). Each is a few dozen instructions
//! whose conditional jumps all go to one exit that hands the packet back to the kernel; clang
//! and bpf-linker in every developer's build would cost more than these lines do.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("{op}: {source}")]
    Sys { op: &'static str, source: io::Error },
    #[error("the kernel refused the {kind} program: {source}; verifier: {log}")]
    Verifier {
        kind: &'static str,
        source: io::Error,
        log: String,
    },
}

pub const MAP_ARRAY: u32 = 2;
pub const MAP_SOCKMAP: u32 = 15;
pub const MAP_XSKMAP: u32 = 17;
pub const PROG_XDP: u32 = 6;
pub const PROG_SK_LOOKUP: u32 = 30;
pub const ATTACH_SK_LOOKUP: u32 = 36;
pub const ATTACH_XDP: u32 = 37;
const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_MAP_DELETE_ELEM: libc::c_long = 3;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_LINK_CREATE: libc::c_long = 28;

pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub const HELPER_REDIRECT_MAP: i32 = 51;
pub const HELPER_SK_RELEASE: i32 = 86;
pub const HELPER_SK_ASSIGN: i32 = 124;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R10: u8 = 10;

/// Opcodes of the conditional jumps `pass_if*` emit.
#[cfg(test)]
const JUMPS: [u8; 6] = [0x55, 0x56, 0x15, 0x35, 0x5d, 0x2d];

/// Checks a finished program: every conditional jump lands on the closing `return verdict`
/// (the last two instructions). The index of that exit.
#[cfg(test)]
pub fn assert_jumps_land_on_the_exit(code: &[Insn], verdict: i32) -> usize {
    let exit = code.len() - 2;
    for (i, insn) in code.iter().enumerate() {
        if JUMPS.contains(&insn.code) {
            let target = i as i64 + 1 + i64::from(insn.off);
            assert_eq!(target, exit as i64, "jump at {i}");
        }
    }
    assert_eq!((code[exit].code, code[exit].imm), (0xb7, verdict));
    assert_eq!(code[exit + 1].code, 0x95);
    exit
}

/// A straight-line program whose conditional jumps all go to one exit that returns the
/// "let the kernel carry on" verdict given to [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    code: Vec<Insn>,
    to_pass: Vec<usize>,
}

impl Asm {
    pub fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.code.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
        self
    }
    pub fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.op(0xbf, dst, src, 0, 0) // ALU64 | MOV | X
    }
    pub fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0xb7, dst, 0, 0, imm) // ALU64 | MOV | K
    }
    pub fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x07, dst, 0, 0, imm) // ALU64 | ADD | K
    }
    pub fn sub_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x17, dst, 0, 0, imm) // ALU64 | SUB | K
    }
    pub fn and_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x57, dst, 0, 0, imm) // ALU64 | AND | K
    }
    pub fn mod_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x97, dst, 0, 0, imm) // ALU64 | MOD | K (unsigned)
    }
    pub fn rsh_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x77, dst, 0, 0, imm) // ALU64 | RSH | K
    }
    /// dst = the low 16 bits of dst read as big-endian (network order to host).
    pub fn be16(&mut self, dst: u8) -> &mut Self {
        self.op(0xdc, dst, 0, 0, 16) // ALU | END | TO_BE
    }
    /// dst = *(u8 *)(src + off)
    pub fn load8(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(0x71, dst, src, off, 0) // LDX | MEM | B
    }
    /// dst = *(u16 *)(src + off)
    pub fn load16(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(0x69, dst, src, off, 0) // LDX | MEM | H
    }
    /// dst = *(u32 *)(src + off)
    pub fn load32(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(0x61, dst, src, off, 0) // LDX | MEM | W
    }
    /// *(u32 *)(dst + off) = src
    pub fn store32(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(0x63, dst, src, off, 0) // STX | MEM | W
    }
    /// dst = the map behind file descriptor `fd` (a two-slot load the kernel rewrites).
    pub fn map(&mut self, dst: u8, fd: RawFd) -> &mut Self {
        self.op(0x18, dst, 1, 0, fd).op(0, 0, 0, 0, 0) // LD | DW | IMM, BPF_PSEUDO_MAP_FD
    }
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.op(0x85, 0, 0, 0, helper)
    }
    pub fn exit(&mut self) -> &mut Self {
        self.op(0x95, 0, 0, 0, 0) // JMP | EXIT
    }
    fn pass_if(&mut self, code: u8, dst: u8, src: u8, imm: i32) -> &mut Self {
        self.to_pass.push(self.code.len());
        self.op(code, dst, src, 0, imm)
    }
    /// 64-bit `dst != imm`.
    pub fn pass_if_ne(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.pass_if(0x55, dst, 0, imm) // JMP | JNE | K
    }
    /// 64-bit `dst != src`.
    pub fn pass_if_ne_reg(&mut self, dst: u8, src: u8) -> &mut Self {
        self.pass_if(0x5d, dst, src, 0) // JMP | JNE | X
    }
    /// 32-bit `dst != imm` (an address word, compared without sign extension).
    pub fn pass_if_ne32(&mut self, dst: u8, imm: u32) -> &mut Self {
        self.pass_if(0x56, dst, 0, imm as i32) // JMP32 | JNE | K
    }
    pub fn pass_if_zero(&mut self, dst: u8) -> &mut Self {
        self.pass_if(0x15, dst, 0, 0) // JMP | JEQ | K
    }
    /// Unsigned `dst >= imm`.
    pub fn pass_if_ge(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.pass_if(0x35, dst, 0, imm) // JMP | JGE | K
    }
    /// Unsigned `dst > src`.
    pub fn pass_if_gt_reg(&mut self, dst: u8, src: u8) -> &mut Self {
        self.pass_if(0x2d, dst, src, 0) // JMP | JGT | X
    }
    /// R2 = the media thread owning the block of port offset `offset` (a register, shifted
    /// right by `block_shift` to a block index, and clobbered), from `owners` (block -> thread
    /// + 1); to the exit when the block has no owner. Uses the stack word at R10 - 4.
    pub fn owner_of_block(&mut self, offset: u8, block_shift: u32, owners: RawFd) -> &mut Self {
        self.rsh_imm(offset, block_shift as i32)
            .store32(R10, -4, offset)
            .mov(R2, R10)
            .add_imm(R2, -4)
            .map(R1, owners)
            .call(HELPER_MAP_LOOKUP_ELEM)
            .pass_if_zero(R0)
            .load32(R2, R0, 0)
            .pass_if_zero(R2)
            .sub_imm(R2, 1)
    }

    /// Appends the exit every `pass_if` jumps to: `return verdict`.
    pub fn finish(mut self, verdict: i32) -> Vec<Insn> {
        let pass = self.code.len();
        for &j in &self.to_pass {
            self.code[j].off = (pass - j - 1) as i16;
        }
        self.mov_imm(R0, verdict).exit();
        self.code
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a prefix of `union bpf_attr` for `cmd`, fully initialised; the kernel
    // zero-fills the rest and reads only `size_of::<T>()` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a descriptor the bpf() syscall just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<OwnedFd, BpfError> {
    let attr = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    bpf(CMD_MAP_CREATE, &attr)
        .map(owned)
        .map_err(|source| BpfError::Sys {
            op: "creating a BPF map",
            source,
        })
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: (&key as *const u32) as u64,
        value: (&value as *const u32) as u64,
        flags: 0, // BPF_ANY
    };
    bpf(CMD_MAP_UPDATE_ELEM, &attr).map(|_| ())
}

/// Removes `key` (absent is fine).
pub fn map_delete(map: &OwnedFd, key: u32) -> io::Result<()> {
    let attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: (&key as *const u32) as u64,
        value: 0,
        flags: 0,
    };
    match bpf(CMD_MAP_DELETE_ELEM, &attr) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads `code` as a `prog_type` program for `attach_type`, named `name` (at most 15 bytes) for
/// `bpftool prog`; `kind` names it in errors.
pub fn prog_load(
    kind: &'static str,
    name: &str,
    prog_type: u32,
    attach_type: u32,
    code: &[Insn],
) -> Result<OwnedFd, BpfError> {
    let license = c"Apache-2.0";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoad {
        prog_type,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach_type,
    };
    match bpf(CMD_PROG_LOAD, &attr) {
        Ok(fd) => Ok(owned(fd)),
        // Permissions and missing support need no verifier log; a rejected program does.
        Err(e)
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::EACCES) =>
        {
            Err(BpfError::Sys {
                op: "loading a BPF program",
                source: e,
            })
        }
        Err(source) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(CMD_PROG_LOAD, &attr).map(owned);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(BpfError::Verifier {
                kind,
                source,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            })
        }
    }
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    /// target_fd or target_ifindex: one union member.
    target: u32,
    attach_type: u32,
    flags: u32,
}

/// Links `prog` to `target` (a network namespace's descriptor, an interface's index) as
/// `attach_type`; the program stays attached while the returned descriptor is open.
pub fn link_create(
    op: &'static str,
    prog: &OwnedFd,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd, BpfError> {
    let attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target,
        attach_type,
        flags,
    };
    bpf(CMD_LINK_CREATE, &attr)
        .map(owned)
        .map_err(|source| BpfError::Sys { op, source })
}
