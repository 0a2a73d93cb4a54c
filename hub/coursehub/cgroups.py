"""Memory and CPU limits for one person's server, enforced by the Linux kernel's control groups.

JupyterHub's ``LocalProcessSpawner`` accepts ``mem_limit`` and ``cpu_limit`` but enforces neither; the spawners
that do (systemdspawner, dockerspawner, kubespawner) ask systemd, Docker or Kubernetes to create a cgroup. A
course hub on a plain machine or in a container has none of them, but it has the kernel's cgroup file system:
this module creates one cgroup per server under the hub's own cgroup and writes the limits into it, on cgroup v1
(separate ``memory`` and ``cpu`` hierarchies, as on this project's machines) or v2 (the unified hierarchy).

What binds, once a server's processes are in its cgroup:
- memory: the kernel charges every page the server and its kernels touch to the cgroup; past the limit it
  reclaims, then its OOM killer kills the largest process *in that cgroup* (a learner's kernel, not anyone
  else's process). Swap is capped at zero on top of the limit, so memory cannot overflow into swap.
- CPU: the CFS bandwidth controller gives the cgroup ``cpus * period`` of CPU time per period and throttles it
  for the rest of the period, whatever the number of threads or processes.

Standard library only: the hub imports it, and so does the command line that runs before any environment exists.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The limits cannot be enforced here; the message says why and what to change."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise CgroupError(f"cannot write {value!r} to {path}: {err.strerror}") from err


def _own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """``/proc/PID/cgroup`` as {controller: path}; the unified (v2) hierarchy under the key ``""``."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller.removeprefix("name=")] = path
    return paths


def _v1_mount(controller: str) -> Path | None:
    """Where the cgroup v1 hierarchy holding ``controller`` is mounted, if any."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup" and controller in options:
            return Path(fields[4])
    return None


def _v2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4])
    return None


def _hierarchies(pid: int | str = "self") -> tuple[int, dict[str, Path]]:
    """(version, {controller: directory of the process's cgroup}) for the memory and cpu controllers."""
    own = _own_cgroups(pid)
    v1 = {c: _v1_mount(c) for c in ("memory", "cpu")}
    if all(v1.values()) and all(c in own for c in v1):
        return 1, {c: mount / own[c].lstrip("/") for c, mount in v1.items()}
    unified = _v2_mount()
    if unified is not None and "" in own:
        base = unified / own[""].lstrip("/")
        available = _read(unified / "cgroup.controllers").split()
        if {"memory", "cpu"} <= set(available):
            return 2, {"memory": base, "cpu": base}
        raise CgroupError(f"the cgroup v2 hierarchy at {unified} offers {available or 'no controllers'}, "
                          "not both memory and cpu")
    raise CgroupError("no cgroup file system with the memory and cpu controllers is mounted under /sys/fs/cgroup")


def _enable_v2_controllers(directory: Path) -> None:
    """Let the children of ``directory`` use memory and cpu limits (cgroup v2's ``subtree_control``)."""
    control = directory / "cgroup.subtree_control"
    if {"memory", "cpu"} <= set(_read(control).split()):
        return
    try:
        control.write_text("+memory +cpu")
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise CgroupError(
                f"cgroup v2 will not hand the memory and cpu controllers to the children of {directory}: it holds "
                "processes itself (the 'no internal processes' rule). Start the hub in a cgroup of its own, for "
                "example at the root of the hierarchy or in a delegated, otherwise empty one.") from err
        raise CgroupError(f"cannot enable memory and cpu in {control}: {err.strerror}") from err


@dataclass(frozen=True)
class ServerCgroup:
    """The cgroup of one person's server: one directory per hierarchy (two on v1, one on v2)."""

    version: int
    directories: tuple[Path, ...]

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.directories]

    def apply(self, limits: Limits) -> None:
        """Write the limits and read them back: a limit the kernel did not take is an error, never a silent no-op."""
        memory, cpu = self._dir("memory"), self._dir("cpu")
        if self.version == 1:
            if limits.memory_bytes:
                _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no escape into swap
                    _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
                taken = int(_read(memory / "memory.limit_in_bytes"))
                if abs(taken - limits.memory_bytes) > 4096:
                    raise CgroupError(f"the kernel set the memory limit to {taken}, not {limits.memory_bytes}")
            if limits.cpus:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
        else:
            if limits.memory_bytes:
                _write(memory / "memory.max", str(limits.memory_bytes))
                if (memory / "memory.swap.max").exists():
                    _write(memory / "memory.swap.max", "0")
            if limits.cpus:
                _write(cpu / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")

    def _dir(self, controller: str) -> Path:
        """The directory holding ``controller``'s files: the only one on v2 (or co-mounted v1), else memory, cpu."""
        return self.directories[0] if controller == "memory" or len(self.directories) == 1 else self.directories[1]

    def memory_limit(self) -> int | None:
        if self.version == 1:
            value = int(_read(self._dir("memory") / "memory.limit_in_bytes"))
            return None if value >= 2**62 else value
        value = _read(self._dir("memory") / "memory.max")
        return None if value == "max" else int(value)

    def cpu_quota(self) -> float | None:
        """The CPU limit in cores (quota / period)."""
        if self.version == 1:
            quota = int(_read(self._dir("cpu") / "cpu.cfs_quota_us"))
            period = int(_read(self._dir("cpu") / "cpu.cfs_period_us"))
        else:
            quota_text, period_text = _read(self._dir("cpu") / "cpu.max").split()
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text)
        return None if quota < 0 else quota / period

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this cgroup for exceeding its memory limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in _read(self._dir("memory") / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def throttled(self) -> int:
        """How many CPU periods this cgroup was throttled in because it had used its quota."""
        for line in _read(self._dir("cpu") / "cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        return 0

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files:
            if path.exists():
                found.update(int(p) for p in _read(path).split())
        return found

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the cgroup, including any a learner detached from their server."""
        kill_file = self.directories[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            _write(kill_file, "1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:  # on v1, repeat: a process may fork between reading the list and the kill
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        if self.pids():
            raise CgroupError(f"processes {sorted(self.pids())} survived SIGKILL in {self.directories[0]}")

    def remove(self) -> None:
        """Kill what is left and delete the cgroup's directories."""
        self.kill_all()
        for directory in self.directories:
            _rmdir_retry(directory)


def _rmdir_retry(directory: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:  # EBUSY while the kernel is still tearing down killed processes
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove {directory}: {err.strerror}") from err
            time.sleep(0.05)


BASE_VARIABLE = "COURSEHUB_CGROUP_BASE"  # set by `course-hub start` on cgroup v2, see :func:`make_room_on_v2`


def _parents(hub_name: str) -> tuple[int, list[Path]]:
    version, bases = _hierarchies()
    if version == 2 and os.environ.get(BASE_VARIABLE):
        bases = {c: Path(os.environ[BASE_VARIABLE]) for c in bases}
    unique = list(dict.fromkeys(bases[c] for c in ("memory", "cpu")))
    return version, [base / hub_name for base in unique]


def create(hub_name: str, server_name: str, limits: Limits) -> ServerCgroup:
    """Create (or reuse) the cgroup ``<the hub's own cgroup>/<hub_name>/<server_name>`` and apply ``limits``.

    Raises:
        CgroupError: when this machine cannot enforce the limits; the message says why.
    """
    if os.geteuid() != 0:
        raise CgroupError("only root can create cgroups for other users' servers: run the hub as root")
    version, parents = _parents(hub_name)
    for parent in parents:
        try:
            parent.mkdir(exist_ok=True)
        except OSError as err:
            raise CgroupError(f"cannot create {parent}: {err.strerror} (is /sys/fs/cgroup mounted read-only?)") from err
    if version == 2:
        _enable_v2_controllers(parents[0].parent)
        _enable_v2_controllers(parents[0])
    cgroup = ServerCgroup(version, tuple(parent / server_name for parent in parents))
    for directory in cgroup.directories:
        directory.mkdir(exist_ok=True)
    cgroup.apply(limits)
    return cgroup


def make_room_on_v2(hub_name: str) -> Path | None:
    """On cgroup v2, below the root: move this process into a leaf ``<own>/<hub_name>-hub`` and return ``<own>``.

    cgroup v2 hands controllers to a cgroup's children only while the cgroup itself holds no process, and the hub
    starts in the cgroup its service manager gave it. Moving the hub (this process, and so everything it starts)
    into a leaf lets ``<own>`` hold the servers' cgroups beside it. That works for a service of its own (systemd:
    ``Delegate=yes``); where other processes share the cgroup (a login shell's session) it fails with a
    :class:`CgroupError` naming the fix. On cgroup v1, or at the root of a v2 hierarchy, it does nothing.
    (This project's machines use cgroup v1, so this path has not run here.)
    """
    version, bases = _hierarchies()
    base = bases["memory"]
    if version == 1 or base == _v2_mount():
        return None
    leaf = base / f"{hub_name}-hub"
    leaf.mkdir(exist_ok=True)
    _write(leaf / "cgroup.procs", str(os.getpid()))
    try:
        _enable_v2_controllers(base)
    except CgroupError as err:
        raise CgroupError(f"{err} Other processes share the hub's cgroup {base}: start the hub as a service of its "
                          "own with delegation, e.g. systemd-run --unit=coursehub -p Delegate=yes "
                          "hub/course-hub start --state DIR") from err
    os.environ[BASE_VARIABLE] = str(base)
    return base


def of_process(pid: int | str = "self") -> ServerCgroup:
    """The cgroup a process is in, for reading its limits and counters (a server's kernel reads its own)."""
    version, dirs = _hierarchies(pid)
    return ServerCgroup(version, tuple(dict.fromkeys(dirs[c] for c in ("memory", "cpu"))))


def existing(hub_name: str, server_name: str) -> ServerCgroup | None:
    """The cgroup :func:`create` made for ``server_name`` under this process's cgroup, if it still exists."""
    version, parents = _parents(hub_name)
    cgroup = ServerCgroup(version, tuple(parent / server_name for parent in parents))
    return cgroup if all(d.is_dir() for d in cgroup.directories) else None


def remove_hub(hub_name: str) -> None:
    """Remove every server's cgroup of this hub, killing what runs in them, then the hub's own folder."""
    try:
        version, parents = _parents(hub_name)
    except CgroupError:
        return
    for parent in parents:
        if not parent.is_dir():
            continue
        for child in [p for p in parent.iterdir() if p.is_dir()]:
            ServerCgroup(version, (child,)).kill_all()
            _rmdir_retry(child)
        _rmdir_retry(parent)
