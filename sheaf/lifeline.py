"""A child process that must not outlive its supervisor (`sheaf up`'s workers).

However the supervisor ends — Ctrl-C, SIGTERM, a crash, or SIGKILL, which it cannot
handle — its workers must stop too: an orphaned worker would keep claiming documents with
nobody to restart, stop or see it. The child asks to receive SIGTERM when its parent dies,
which runs its ordinary graceful shutdown (documents in flight are released as
interrupted, no attempt spent):

- on Linux, `prctl(PR_SET_PDEATHSIG, SIGTERM)` — the kernel sends it the moment the
  parent exits;
- elsewhere, a daemon thread that checks the parent's pid once a second.

Either way, a parent that already died before the child got here is noticed at once
(the child was re-parented, so `getppid()` no longer names the supervisor).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CHECK_SECONDS = 1.0


def stop_with_parent(parent_pid: int) -> None:
    """Have SIGTERM sent to this process when `parent_pid`, its parent, exits."""
    if not (sys.platform.startswith("linux") and _prctl_deathsig()):
        threading.Thread(target=_watch, args=(parent_pid,), name="lifeline", daemon=True).start()
    if os.getppid() != parent_pid:  # gone before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _prctl_deathsig() -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)) == 0


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
