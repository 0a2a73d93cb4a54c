"""Tell a learner why their last kernel vanished: "appears to have died" becomes "ran out of memory".

When a server's cgroup runs out of memory the kernel's OOM killer ends the largest process in it, the Python
kernel, and JupyterLab can only say that the kernel "appears to have died". Each new kernel started by a
learner's server (the course environment's ``ipython_kernel_config.py`` loads this module) compares the
cgroup's OOM-kill count with the count the previous kernel saw; when it went up, the first cell the learner runs
says what happened, what was lost and what to do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from coursehub import cgroups

SEEN = Path.home() / ".local" / "share" / "coursehub" / "oom-kills-seen"


def notice(limit_bytes: int | None) -> str:
    limit = f"{limit_bytes / 2**30:.1f} GiB" if limit_bytes else "its limit"
    return (f"Your previous Python kernel was stopped because your server ran out of memory ({limit}): the "
            "kernel that asked for more was ended and a fresh one started. Your files are safe, but variables "
            "are gone, so run the notebook again from the top. To stay under the limit, delete large objects you "
            "no longer need (del x), use smaller batches or sizes, and shut down kernels you are not using; the "
            "Mem figure in the status bar shows what your server uses.")


def oom_kills_since_last_kernel() -> int:
    """New OOM kills in this server's cgroup since the last kernel looked (and remember the count)."""
    count = cgroups.of_process().oom_kills()
    try:
        seen = int(SEEN.read_text())
    except (OSError, ValueError):
        seen = count  # first kernel of this account: nothing to report
    if count < seen:  # a new server, a new cgroup: its count started again at 0
        seen = 0
    SEEN.parent.mkdir(parents=True, exist_ok=True)
    SEEN.write_text(str(count))
    return count - seen


def install(shell) -> None:
    """Register a one-shot message for the next cell, if the last kernel was killed for lack of memory."""
    if "JPY_SESSION_NAME" not in os.environ or "COURSEHUB_ROLE" not in os.environ:
        return  # only kernels that a person's JupyterLab started, never the autograder's
    try:
        if oom_kills_since_last_kernel() <= 0:
            return
        text = notice(cgroups.of_process().memory_limit())
    except (OSError, ValueError, cgroups.CgroupError):
        return

    def tell_once(*_args):
        print(text, file=sys.stderr)
        shell.events.unregister("pre_run_cell", tell_once)

    shell.events.register("pre_run_cell", tell_once)
