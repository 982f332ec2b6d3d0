"""Red team: reach the entry point (PID 1, non-dumpable) every way a process of the same uid
might: its threads' descriptors, memory and environment through /proc/1/task/<tid>, map_files,
cwd and root, ptrace, process_vm_readv, pidfd_getfd, kcmp. Each is tried on a child of our own
first (the control: the same call works on a dumpable process of ours). Also lists our own
descriptors and looks for a 32-hex marker in what we can read. One line per attempt."""

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_PROCESS_VM_READV, SYS_KCMP, SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 310, 312, 434, 438
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206


def err() -> str:
    return os.strerror(ctypes.get_errno())


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def attempts(pid: int, who: str) -> None:
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"))
    except OSError as e:
        tids = []
        print(f"{who} list task: {e.strerror}")
    paths = [f"/proc/{pid}/task/{t}/fd/{fd}" for t in tids for fd in ("0", "1")]
    paths += [f"/proc/{pid}/task/{t}/{name}" for t in tids for name in ("mem", "environ")]
    paths += [
        f"/proc/{pid}/{name}" for name in ("fd/0", "fd/1", "mem", "environ", "fdinfo/0", "map_files", "cwd", "root")
    ]
    for path in paths:
        try:
            fd = os.open(path, (os.O_WRONLY if "/fd/" in path else os.O_RDONLY) | os.O_NONBLOCK)
            os.close(fd)
            print(f"{who} OPENED {path}")
        except OSError as e:
            print(f"{who} open {path}: {e.strerror}")
    for name in ("fd", "map_files"):
        try:
            os.listdir(f"/proc/{pid}/{name}")
            print(f"{who} LISTED /proc/{pid}/{name}")
        except OSError as e:
            print(f"{who} list /proc/{pid}/{name}: {e.strerror}")
    buf = ctypes.create_string_buffer(8)
    local, remote = Iovec(ctypes.cast(buf, ctypes.c_void_p), 8), Iovec(ctypes.addressof(buf), 8)
    r = libc.syscall(SYS_PROCESS_VM_READV, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    print(f"{who} {'READ' if r >= 0 else 'process_vm_readv: ' + err()} process_vm_readv")
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    got = libc.syscall(SYS_PIDFD_GETFD, pidfd, 0, 0) if pidfd >= 0 else -1
    print(f"{who} {'GOT' if got >= 0 else 'pidfd_getfd: ' + err()} pidfd_getfd")
    r = libc.syscall(SYS_KCMP, pid, os.getpid(), 0, 0, 0)
    print(f"{who} {'COMPARED' if r >= 0 else 'kcmp: ' + err()} kcmp")
    for req, name in ((PTRACE_ATTACH, "attach"), (PTRACE_SEIZE, "seize")):
        r = libc.ptrace(req, pid, 0, 0)
        print(f"{who} {'TRACED' if r == 0 else 'ptrace: ' + err()} ptrace {name}")
        if r == 0:
            if req == PTRACE_ATTACH:
                os.waitpid(pid, 0)
            libc.ptrace(PTRACE_DETACH, pid, 0, 0)


fds = {}
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    with contextlib.suppress(OSError):  # the listing's own descriptor
        fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
print("my fds: " + " ".join(f"{k}={'pipe' if v.startswith('pipe:') else v}" for k, v in fds.items()))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.PIPE)
attempts(child.pid, "control")
child.kill()
child.wait()
attempts(1, "entry")

seen = open("/proc/self/cmdline", "rb").read() + open("/proc/self/environ", "rb").read()
seen += open("/proc/1/cmdline", "rb").read() + repr(sorted(os.environ.items())).encode()
found = set(re.findall(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", seen))
found -= set(re.findall(rb"[0-9a-f]{32}", os.environ.get("QISKIT_IBM_INSTANCE", "").encode()))  # the CRN's account
print(f"32-hex strings readable: {len(found)}")
for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGUSR1, signal.SIGSEGV):
    os.kill(1, sig)  # a namespace's init takes only the signals it handles
    print(f"sent {sig.name} to PID 1; still here")
print("done", flush=True)
