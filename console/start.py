"""The `hvc` entry point: the libvirt hosts named with -c start opening before the command line
is even imported.

Opening is most of a one-shot command's wall time on a large host (the test driver parses the
whole host definition then: ~1.5 s at 2,000 domains), and libvirt does it without holding the
GIL. Started here, it runs beside the import of click, the model and the backend (~0.12 s)
instead of after them. ``backends.libvirt.connect.open_ahead`` takes these openings over; one the
command does not use (another read-only setting, a name the config file resolves) is closed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# With these, the command line answers without connecting: no host is contacted (an ssh URI
# could otherwise ask for a password under the help text).
_NO_CONNECT = frozenset({"-h", "--help", "--version"})


def connect_args(argv: Sequence[str]) -> tuple[list[str], bool]:
    """The values of every -c/--connect in ``argv`` (as click reads them: ``-c X``, ``-cX``,
    ``--connect X``, ``--connect=X``; nothing after ``--``), and whether --read-only is given."""
    uris: list[str] = []
    read_only = False
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if arg in _NO_CONNECT:
            return [], read_only
        if arg in ("-c", "--connect"):
            value = next(args, None)
            if value is not None:
                uris.append(value)
        elif arg.startswith("--connect="):
            uris.append(arg.removeprefix("--connect="))
        elif arg.startswith("-c") and not arg.startswith("--"):
            uris.append(arg[2:])
        elif arg == "--read-only":
            read_only = True
    return uris, read_only


def main() -> None:
    uris, read_only = connect_args(sys.argv[1:])
    if uris:
        from backends.libvirt.connect import open_early

        open_early(uris, read_only)
    from console.cli import main as cli_main

    cli_main()
