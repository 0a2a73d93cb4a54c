"""The operating-system sandbox a submission runs in: bubblewrap, what it shows, and what the machine allows.

:func:`probe` finds out once per process whether the sandbox can be made here and raises
:class:`IsolationUnavailable` (saying why and how to fix it) when it cannot; the autograder then refuses
to grade rather than run learner code with the instructor's rights. :func:`bwrap_command` builds the
command line. Inside, the learner's process sees:

- ``/usr`` (and the ``/bin``, ``/lib`` links), the Python installation, the virtual environment and the
  ``coursekit`` package, all read-only, and nothing else of the machine: not the rest of the course
  directory (no ``solutions/``, gradebook, ``submitted/``, ``reports/``, ``feedback/``), not the
  instructor's home;
- a private, size-limited copy of its own submission folder, its only writable place besides a private
  size-limited ``/tmp`` and ``/dev/shm`` (tmpfs: nothing it writes reaches the grader's disk);
- new user, PID, network, IPC, UTS and cgroup namespaces: it runs as uid 1000 without capabilities and
  cannot make further user namespaces, every process it starts dies with the sandbox, and it has no network
  (not even the host's loopback or its abstract unix sockets).

Process count: RLIMIT_NPROC, set inside, counts the tasks of one uid in one user namespace, so it binds
the sandbox alone; but the kernel exempts processes whose host uid is root, so a root grader also puts each
sandbox in a pids cgroup of its own (cgroup v2, or v1's pids hierarchy), and refuses when it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 1000
HOME = "/home/learner"
CGROUP_PREFIX = "coursekit-"
_INSTALL = ("install bubblewrap: `sudo apt-get install bubblewrap` (Debian, Ubuntu), `sudo dnf install bubblewrap` "
            "(Fedora), `sudo pacman -S bubblewrap` (Arch)")
_USERNS = ("enable unprivileged user namespaces: `sudo sysctl -w user.max_user_namespaces=15000` and, where they "
           "exist, `kernel.unprivileged_userns_clone=1` (Debian before 11) or `kernel.apparmor_restrict_unprivileged_"
           "userns=0` (Ubuntu 23.10 and later); inside Docker, run with `--security-opt seccomp=unconfined "
           "--security-opt apparmor=unconfined`")


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot be made on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Isolation:
    """How submissions are isolated on this machine: by bubblewrap (``bwrap`` set) or not at all.

    ``cgroup`` is the folder under which each sandbox gets a pids cgroup (root graders only).
    """

    bwrap: str | None
    version: str = ""
    cgroup: str | None = None

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    @property
    def label(self) -> str:
        """The word ``grades.csv`` records for rows graded this way."""
        return "bwrap" if self.isolated else "none"

    def describe(self) -> str:
        if not self.isolated:
            return "none: submissions run with the grader's own rights (--no-isolation)"
        processes = (f"a pids cgroup per sandbox under {self.cgroup}" if self.cgroup
                     else "RLIMIT_NPROC in the sandbox's own user namespace")
        return (f"{self.version}: user, PID, network, IPC, UTS and cgroup namespaces, read-only system, "
                f"private tmpfs folders; processes limited by {processes}")


NO_ISOLATION = Isolation(bwrap=None)


# ---------------------------------------------------------------------------------------------------
# What the sandbox shows
# ---------------------------------------------------------------------------------------------------

def _covered(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def python_paths() -> list[str]:
    """Read-only folders the sandboxed interpreter needs: the Python installation, the virtual environment's
    site-packages and the ``coursekit`` package, as the grader sees them (and resolved, where links differ).

    Only site folders and the interpreter's prefixes: a ``sys.path`` entry such as the course root (which
    pytest or ``python -m`` may add) would show the whole course, so it is never bound; ``coursekit`` is.
    """
    import coursekit

    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    wanted = set(prefixes)
    for entry in sys.path:
        if entry and os.path.isdir(entry) and (
                Path(entry).name in ("site-packages", "dist-packages") or _covered(os.path.abspath(entry), list(prefixes))):
            wanted.add(os.path.abspath(entry))
    wanted.add(str(Path(coursekit.__file__).resolve().parent))
    wanted |= {os.path.realpath(p) for p in wanted}
    wanted = {p for p in wanted if os.path.isdir(p) and not _covered(p, ["/usr"])}
    kept: list[str] = []
    for path in sorted(wanted, key=len):  # parents first; drop what a parent already shows
        if not _covered(path, kept):
            kept.append(path)
    return kept


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _data_fd(text: str) -> int:
    fd = os.memfd_create("coursekit-sandbox-data")
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def bwrap_command(isolation: Isolation, argv: list[str], files: dict[str, str], folder: str, *, disk_mb: int,
                  hidden: list[str] = ()) -> tuple[list[str], list[int]]:
    """The ``bwrap`` command that runs ``argv`` in the sandbox, and the file descriptors it must inherit.

    Args:
        files: name -> path on the host, copied into the sandbox's private working folder.
        folder: that folder's name, under ``/home/learner`` (the sandbox's ``HOME``).
        disk_mb: size of each private tmpfs (the home with the working folder, ``/tmp``, ``/dev/shm``).
        hidden: host folders the sandbox must never show (the course); a read-only bind that would
            contain one is refused.

    The caller closes the returned descriptors once the process has started.
    """
    readonly = python_paths()
    for secret in hidden:
        shown = [p for p in ["/usr", *readonly] if _covered(os.path.realpath(secret), [p])]
        if shown:
            raise IsolationUnavailable(
                f"the sandbox would show {secret}: it lies inside {shown[0]}, which submissions must be able to read. "
                "Keep the course directory outside the Python installation.")
    size = str(disk_mb * 2**20)
    workdir = f"{HOME}/{folder}"
    fds = [_data_fd(f"learner:x:{SANDBOX_UID}:{SANDBOX_UID}:learner:{HOME}:/bin/sh\n"),
           _data_fd(f"learner:x:{SANDBOX_UID}:\n")]
    args = [isolation.bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--disable-userns", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            *_system_binds(),
            "--ro-bind-data", str(fds[0]), "/etc/passwd", "--ro-bind-data", str(fds[1]), "/etc/group",
            "--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
            "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", HOME, "--dir", workdir]
    # After the tmpfs mounts: a virtual environment or a checkout under /tmp must be bound back on top.
    for path in readonly:
        args += ["--ro-bind", path, path]
    for name, source in sorted(files.items()):
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        fds.append(fd)
        args += ["--perms", "0644", "--file", str(fd), f"{workdir}/{name}"]
    env = {"HOME": HOME, "USER": "learner", "LOGNAME": "learner", "LANG": "C.UTF-8", "TERM": "dumb",
           "TMPDIR": "/tmp", "MPLBACKEND": "agg", "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
    env.update({k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ})
    args += ["--clearenv", *[x for k, v in sorted(env.items()) for x in ("--setenv", k, v)]]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", workdir, "--", *argv]
    return args, fds


# ---------------------------------------------------------------------------------------------------
# Counting a root grader's sandbox processes: a pids cgroup per sandbox
# ---------------------------------------------------------------------------------------------------

def _cgroup_parent() -> Path | None:
    """A folder where this (root) process may create pids cgroups, or None."""
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own.update({controller: path for controller in controllers.split(",")})
    for fields in mounts:
        mount_point, fstype = fields[4], fields[fields.index("-") + 1]
        options = fields[-1].split(",")
        if fstype == "cgroup2" and "pids" in (Path(mount_point) / "cgroup.controllers").read_text().split():
            parent = Path(mount_point) / "coursekit"
            try:  # a cgroup of our own at the top, where v2 lets processes move in and delegates pids
                (Path(mount_point) / "cgroup.subtree_control").write_text("+pids")
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text("+pids")
            except OSError:
                continue
            return parent
        if fstype == "cgroup" and "pids" in options:
            parent = Path(mount_point) / own.get("pids", "/").lstrip("/")
            if os.access(parent, os.W_OK):
                return parent
    return None


class PidsCgroup:
    """One sandbox's pids cgroup: created with its limit, joined by the sandbox's first process, removed after."""

    counter = 0

    def __init__(self, parent: str, max_processes: int) -> None:
        PidsCgroup.counter += 1
        self.path = Path(parent) / f"{CGROUP_PREFIX}{os.getpid()}-{PidsCgroup.counter}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(max_processes))
        self._procs = os.open(self.path / "cgroup.procs", os.O_WRONLY)

    def join(self) -> None:
        """Runs in the new process before it executes bwrap: everything it starts is counted here."""
        os.write(self._procs, str(os.getpid()).encode())

    def close(self) -> None:
        """Kill what is left in the cgroup and remove it."""
        os.close(self._procs)
        _remove_cgroup(self.path, wait_s=5.0)


def _remove_cgroup(path: Path, wait_s: float) -> bool:
    import signal
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if (path / "cgroup.kill").exists():
                (path / "cgroup.kill").write_text("1")
            else:
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _sweep_cgroups(parent: Path) -> None:
    """Remove the cgroups of graders that were killed before they could (their processes are gone too)."""
    for path in parent.glob(f"{CGROUP_PREFIX}*"):
        pid = path.name[len(CGROUP_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_cgroup(path, wait_s=1.0)


# ---------------------------------------------------------------------------------------------------
# Can the sandbox be made here?
# ---------------------------------------------------------------------------------------------------

def _why(stderr: str, bwrap: str) -> str:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    lowered = stderr.lower()
    if "bwrap:" in lowered and any(s in lowered for s in ("namespace", "uid map", "operation not permitted")):
        return f"bubblewrap could not create its namespaces ({last}). To fix it, {_USERNS}."
    if "unrecognized option" in lowered or "unknown option" in lowered:
        return f"{bwrap} is too old for coursekit ({last}); bubblewrap 0.8 or later is needed: {_INSTALL}."
    return (f"the sandbox started, but Python could not run inside it ({last}). The Python installation, the "
            "virtual environment and the coursekit package must be readable by the user who grades.")


_probed: Isolation | None = None


def remember(isolation: Isolation) -> None:
    """Let :func:`probe` in this process answer ``isolation`` (found by the run that started it) without probing."""
    global _probed
    _probed = isolation


def probe() -> Isolation:
    """What this machine gives: an :class:`Isolation` that works, checked by starting the sandbox once per process.

    Raises:
        IsolationUnavailable: no bubblewrap, user namespaces disabled, a root grader without a pids cgroup,
            or a Python the sandbox cannot read; the message says how to fix it.
    """
    if _probed is not None:
        return _probed
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise IsolationUnavailable(f"bubblewrap (`bwrap`) is not installed; {_INSTALL}.")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip() or "bubblewrap"
    cgroup = None
    if os.geteuid() == 0:
        parent = _cgroup_parent()
        if parent is None:
            raise IsolationUnavailable(
                "coursekit grade runs as root, and the kernel does not count root's processes against a sandbox's "
                "limit; it needs a pids cgroup it can create (cgroup v2 with the pids controller, or v1's pids "
                "hierarchy, writable) and found none. Run coursekit grade as an ordinary user (in Docker: "
                "`--user 1000:1000`), or give it a writable cgroup file system.")
        _sweep_cgroups(parent)
        cgroup = str(parent)
    isolation = Isolation(bwrap=bwrap, version=version, cgroup=cgroup)
    check = f"import os, coursekit.autograder.child; assert os.getuid() == {SANDBOX_UID}; print('sandbox ok')"
    args, fds = bwrap_command(isolation, [sys.executable, "-I", "-c", check], {}, "probe", disk_mb=16)
    group = PidsCgroup(cgroup, 64) if cgroup else None
    try:
        proc = subprocess.run(args, pass_fds=fds, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, preexec_fn=group.join if group else None)
    finally:
        for fd in fds:
            os.close(fd)
        if group:
            group.close()
    if proc.returncode != 0 or "sandbox ok" not in proc.stdout:
        raise IsolationUnavailable(_why(proc.stderr, bwrap))
    remember(isolation)
    return isolation
