"""JupyterHub's local-process spawner with the limits it leaves unenforced, enforced by cgroups.

``LocalProcessSpawner`` starts each user's server as a process running as that user, and ignores
``mem_limit`` and ``cpu_limit``. ``CgroupSpawner`` keeps everything it does and adds one step: before the
server's process becomes the user, it joins a cgroup of its own whose limits the kernel enforces
(:mod:`coursehub.cgroups`). Every process the server starts (kernels, terminals, anything a learner runs or
detaches) stays in that cgroup; stopping the server kills them all and removes it. Where no cgroup can be
made, the spawn fails with the reason: a hub that says it limits memory and does not is worse than none.
"""

from __future__ import annotations

import os

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from coursehub import cgroups


class CgroupSpawner(LocalProcessSpawner):
    cgroup_name = Unicode(
        "coursehub",
        config=True,
        help="Folder, under the hub's own cgroup, that holds one cgroup per server.",
    )

    _cgroup: cgroups.ServerCgroup | None = None

    @property
    def _server_cgroup_name(self) -> str:
        return self.user.name if not self.name else f"{self.user.name}-{self.name}"

    async def start(self):
        limits = cgroups.Limits(memory_bytes=self.mem_limit or None, cpus=self.cpu_limit or None)
        stale = cgroups.existing(self.cgroup_name, self._server_cgroup_name)
        if stale is not None:  # left by a server that died with the hub: nothing of it may keep running
            stale.remove()
        self._cgroup = cgroups.create(self.cgroup_name, self._server_cgroup_name, limits)
        self.log.info("Server of %s limited to %s bytes of memory and %s CPUs by %s", self.user.name,
                      limits.memory_bytes, limits.cpus, ", ".join(map(str, self._cgroup.directories)))
        try:
            return await super().start()
        except Exception:
            self._cgroup.remove()
            raise

    def make_preexec_fn(self, name):
        become_user = super().make_preexec_fn(name)
        procs_files = [str(path) for path in self._cgroup.procs_files]

        def join_cgroup_then_become_user():
            # Runs in the child between fork and exec, still as root: join first, so that nothing the
            # server ever does escapes the limits, then drop to the user.
            pid = str(os.getpid()).encode()
            for path in procs_files:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            become_user()

        return join_cgroup_then_become_user

    async def stop(self, now=False):
        await super().stop(now=now)
        cgroup = self._cgroup or cgroups.existing(self.cgroup_name, self._server_cgroup_name)
        if cgroup is not None:
            cgroup.remove()  # kernels and anything else the server left behind
        self._cgroup = None
