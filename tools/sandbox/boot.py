"""In-sandbox bootstrap: apply rlimits, Landlock and seccomp to itself, then exec the user code.

Run by the *system* Python as ``python3 -I -S -c <this source> <config json>``; it imports
only the standard library, because the venv (and anything installed in it, such as the
``pyseccomp`` or ``landlock`` PyPI packages) is neither readable by the sandbox uid nor
built for that interpreter. That is why seccomp is driven through ctypes against Debian's
``libseccomp.so.2`` (a dependency of apt, so always present) and Landlock through its three
raw syscalls. Everything applied here survives the ``execv``. Any failure exits with
:data:`SETUP_FAILED` and a marked line on stderr, before the user code could run.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
from typing import Any

SETUP_FAILED = 125
MARK = "tierflow-sandbox-setup-failed:"

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every arch.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 16, 32, 64, 128
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 256, 512, 1024, 2048, 4096
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
ACCESS = {
    "read_exec": _EXECUTE | _READ_FILE | _READ_DIR,
    "read": _READ_FILE | _READ_DIR,
    "read_file": _READ_FILE,
    "rw_file": _READ_FILE | _WRITE_FILE | _TRUNCATE,
    # No EXECUTE: the code may write files but not run them as programs.
    "write": (_READ_FILE | _READ_DIR | _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR)
    | (_MAKE_REG | _MAKE_SYM | _MAKE_FIFO | _REFER | _TRUNCATE),
}
_PR_SET_NO_NEW_PRIVS = 38

# seccomp: syscalls refused in every layer (debugging, kernel attack surface, io_uring,
# which can open sockets without the socket syscall), and, in "strict" mode, the ones that
# make network connections or new processes.
_BASELINE = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd", "keyctl",
    "add_key", "request_key", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_by_handle_at", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "fsopen", "fsmount", "move_mount", "open_tree", "mount_setattr",
)  # fmt: skip
_STRICT = ("socket", "fork", "vfork", "tkill", "pidfd_open", "pidfd_send_signal")
_ALLOW = 0x7FFF0000
_CLONE_THREAD = 0x00010000
_CMP_NE, _CMP_MASKED_EQ = 1, 7


def _errno_action(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class SetupError(Exception):
    pass


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or a negative errno when it has none."""
    rc = int(_libc().syscall(_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    return rc if rc >= 0 else -ctypes.get_errno()


def apply_landlock(rules: list[list[str]]) -> int:
    """Deny every filesystem access except ``rules`` (``[path, access name]``), every TCP
    bind/connect (ABI 4+), and signals / abstract Unix sockets leaving the sandbox (ABI 6+)."""
    libc = _libc()
    abi = landlock_abi()
    if abi < 1:
        raise SetupError(f"Landlock is not available ({os.strerror(-abi)})")
    fs = (1 << 13) - 1
    fs |= _REFER if abi >= 2 else 0
    fs |= _TRUNCATE if abi >= 3 else 0
    fs |= _IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = int(libc.syscall(_LL_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        raise SetupError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # e.g. no /lib64 on this arch: nothing there to allow
        rule = _PathBeneath(ACCESS[access] & fs, fd)
        rc = libc.syscall(_LL_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)
        os.close(fd)
        if rc != 0:
            raise SetupError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_LL_RESTRICT, ruleset, 0) != 0:
        raise SetupError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)
    return abi


def apply_seccomp(mode: str) -> None:
    """Load a filter that allows everything but the listed syscalls (which fail, not kill,
    so the user code sees a PermissionError it can report)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SetupError(f"no libseccomp.so.2 ({exc}); apt-get install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise SetupError("seccomp_init failed")
    pid = os.getpid()  # stays ours across the execv

    def deny(name: str, err: int = errno.EPERM, *cmps: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a syscall on this arch (fork on aarch64...)
        arr = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(ctx, _errno_action(err), nr, len(cmps), arr)
        if rc != 0:
            raise SetupError(f"seccomp rule for {name}: {os.strerror(-rc)}")

    try:
        for name in _BASELINE:
            deny(name)
        if mode == "strict":
            for name in _STRICT:
                deny(name)
            deny("clone", errno.EPERM, (0, _CMP_MASKED_EQ, _CLONE_THREAD, 0))  # threads only
            deny("clone3", errno.ENOSYS)  # glibc then falls back to clone for threads
            deny("kill", errno.EPERM, (0, _CMP_NE, pid, 0))  # signal only itself
            deny("tgkill", errno.EPERM, (0, _CMP_NE, pid, 0))
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            raise SetupError(f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def main(argv: list[str]) -> None:
    import resource

    config = json.loads(argv[1])
    try:
        if config.get("landlock") is not None:
            apply_landlock(config["landlock"])
        if config.get("seccomp"):
            apply_seccomp(config["seccomp"])
        for res, soft, hard in config["rlimits"]:
            resource.setrlimit(res, (soft, hard))
        os.execv(config["argv"][0], config["argv"])
    except (SetupError, OSError, ValueError) as exc:
        sys.stderr.write(f"{MARK} {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main(sys.argv)
