"""Start a lab daemon under a process that reaps its orphans at once (``python -m
backends.libvirt.lab.reaper CMD...``).

libvirt daemonizes every QEMU it starts, so an exited QEMU's zombie belongs to the nearest
``PR_SET_CHILD_SUBREAPER`` ancestor, else to PID 1. And libvirt waits for that pid to vanish
(``qemuProcessKill`` polls ``kill(pid, 0)`` every 200 ms) before it finishes stopping a guest:
the source side of a migration's Confirm, ``virsh destroy``... On a host PID 1 (systemd) reaps
at once. Some sandboxes' PID 1 reaps on a one-second timer, one to two seconds after the exit:
every migration then ends on that timer's tick, 2 s or 3 s for 0.7–1.3 s of work, and which one
depends on where the tick falls. Under this reaper the lab's daemons behave as on a host.

CMD is a daemon that forks into the background (``libvirtd -d``): its exit status is this
command's; the reaper stays behind, detached, until it has no children left.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(cmd: list[str]) -> int:
    read_end, write_end = os.pipe()
    if os.fork():  # the caller's process: report how CMD went
        os.close(write_end)
        reported = os.read(read_end, 1)
        return reported[0] if reported else 1
    os.close(read_end)
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        child = os.posix_spawnp(cmd[0], cmd, os.environ)  # not Popen: it would reap CMD itself
    except OSError as exc:
        print(f"cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        child, code = 0, 127
    while child:  # reaping all along: CMD may wait for one of its orphans to go
        pid, status = os.wait()
        if pid == child:
            child, code = 0, os.waitstatus_to_exitcode(status)
    os.write(write_end, bytes([code & 0xFF]))
    os.close(write_end)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # let the caller's pipes close
        os.dup2(devnull, fd)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
