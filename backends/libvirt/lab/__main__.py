"""``python -m backends.libvirt.lab up|status|down``: the lab by hand, without the hvc CLI."""

from __future__ import annotations

import sys
from collections.abc import Callable

from backends.errors import HvcError
from backends.libvirt.lab import LabStatus, lab_down, lab_status, lab_up


def _print(status: LabStatus) -> None:
    print(f"up: {status.up}   virt_type: {status.virt_type}")
    for uri in status.uris:
        print(f"  host {uri}")
    for uri, name, state in status.guests:
        print(f"  {name:<16} {state:<10} {uri}")
    for problem in status.problems:
        print(f"  problem: {problem}")


def main() -> None:
    actions: dict[str, Callable[[], LabStatus]] = {
        "up": lambda: lab_up(print), "status": lab_status, "down": lambda: lab_down(print)}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit("usage: python -m backends.libvirt.lab up|status|down")
    try:
        _print(actions[sys.argv[1]]())
    except HvcError as err:
        sys.exit(f"hvc lab: {err.one_line()}")


if __name__ == "__main__":
    main()
