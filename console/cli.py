"""The `hvc` command line. Chooses headless or console before importing Textual."""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from backends.errors import BadInput, HvcError

VERSION = "0.1.0"


def backend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command shares; accepted before and after the command name."""
    options = [
        click.option("-c", "--connect", "connect", multiple=True, metavar="URI",
                     help="libvirt host URI or a name from the config file; repeat for more hosts."),
        click.option("--demo", is_flag=True, default=None, help="Use the embedded demo datacenter."),
        click.option("--fleet", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Use a simulated datacenter described by a fleet TOML file."),
        click.option("--scale", metavar="HxV", default=None,
                     help="Use a generated simulated fleet of H hosts with V VMs each."),
        click.option("--read-only", is_flag=True, default=None,
                     help="Open read-only connections and refuse every change."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def merged(ctx: click.Context, **local: Any) -> dict[str, Any]:
    """Options given on the group, extended or overridden by the subcommand's."""
    merged = dict(ctx.obj or {})
    for key, value in local.items():
        if key == "connect":
            merged[key] = tuple(merged.get(key, ())) + tuple(value)
        elif value is not None:
            merged[key] = value
    return merged


def _clock(speed: float | None, *, live: bool, repeatable: bool) -> Any:
    """The simulator's clock: fixed for one-shot reads; wall time × speed for live use; a manual
    clock that moves only when an operation waits for ``speed`` 0 (instant and repeatable)."""
    from backends.sim.clock import EPOCH, ManualClock, ScaledClock

    if not live or speed == 0:
        return ManualClock(EPOCH)
    return ScaledClock(speed or 1.0, start=EPOCH if repeatable else None)


def open_backend_from(opts: dict[str, Any], *, live: bool = False, repeatable: bool = False) -> Any:
    """The backend the options pick; ``live`` runs a simulator on wall-clock time (the console),
    from a fixed instant when ``repeatable`` (scenarios: identical screenshots every run)."""
    from backends.open import open_backend
    from console.config import load_config

    config = load_config()
    opts["keys"] = config.keys
    backend = open_backend(
        config.resolve(tuple(opts.get("connect", ()))),
        fleet=opts.get("fleet"), scale=opts.get("scale"), demo=bool(opts.get("demo")),
        read_only=bool(opts.get("read_only")) or config.read_only,
        clock=_clock(opts.get("speed"), live=live, repeatable=repeatable),
    )
    backend.policy_dir = config.policy_dir
    return backend


def snapshot_from(ctx: click.Context, opts: dict[str, Any]) -> Any:
    """One inventory snapshot of what the options pick; the backend is closed again."""
    backend = open_backend_from(merged(ctx, **opts))
    try:
        return backend.snapshot()
    finally:
        backend.close()


# Where each command not defined in this file lives. A command imports its own module only:
# `hvc migrate` does not pay for the bench's or the devices' imports (~15 ms of its start).
# tests/unit/test_cli.py keeps this table in step with the modules' COMMANDS.
ELSEWHERE: dict[str, str] = {
    **dict.fromkeys(("migrate", "handoff", "rebalance", "replicate", "failover", "replication", "plan-vnuma",
                     "audit", "start", "shutdown", "reboot", "force-off", "pause", "resume"), "console.cli_ops"),
    **dict.fromkeys(("detach", "attach", "images"), "console.cli_devices"),
    **dict.fromkeys(("device-op", "device-policy", "balloon"), "console.cli_devices_policy"),
    **dict.fromkeys(("services", "service-move"), "console.cli_services"),
    "bench": "console.bench.suite",
}


class _Commands(click.Group):
    """The commands defined in this file answer at once; any other is imported from its module
    (``ELSEWHERE``) when it is asked for, and all of them when they are listed."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            if cmd_name in ELSEWHERE:
                self._add_from(ELSEWHERE[cmd_name])
            else:
                self._add_all()  # unknown: the error can then name every command
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_all()
        return super().list_commands(ctx)

    def _add_all(self) -> None:
        for module in dict.fromkeys(ELSEWHERE.values()):
            self._add_from(module)

    def _add_from(self, module: str) -> None:
        import importlib

        for command in importlib.import_module(module).COMMANDS:
            self.commands.setdefault(command.name, command)


@click.group(cls=_Commands, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@backend_options
@click.version_option(VERSION, "--version", prog_name="hvc")
@click.pass_context
def cli(ctx: click.Context, **opts: Any) -> None:
    """hvc — a keyboard-first console for KVM/libvirt hypervisor hosts.

    With no command, opens the console: on the libvirt hosts given with -c, or on the
    embedded simulated datacenter.
    """
    ctx.obj = merged(ctx, **opts)
    if ctx.invoked_subcommand is None:
        _console(ctx.obj)


@cli.command()
@backend_options
@click.pass_context
def demo(ctx: click.Context, **opts: Any) -> None:
    """Open the console on the embedded simulated datacenter."""
    options = merged(ctx, **opts)
    if not options.get("connect") and not options.get("fleet") and not options.get("scale"):
        options["demo"] = True
    _console(options)


@cli.command()
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def inventory(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Print hosts, NUMA cells, VMs, devices and disk chains."""
    from backends.gcpause import paused

    # One read, printed, then exit: all it loads lives until then, so no collection runs (one over
    # the whole first load as it ended found nothing: ~20 ms at 2,000 domains) and it is frozen out
    # of the collector's reach before the pause ends.
    with paused():
        backend = open_backend_from(merged(ctx, **opts))
        try:
            _print_inventory(backend, as_json)
        finally:
            backend.close()
            gc.freeze()


@cli.command()
@click.argument("scenario")
@backend_options
@click.option("--screenshots", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Write the scenario's screenshots (SVG) into DIR.")
@click.option("--size", default="120x40", metavar="COLSxROWS", help="Terminal size to run the console at.")
@click.option("--speed", type=click.FloatRange(min=0), default=None,
              help="Simulator only: run the clock this many times faster; 0 runs instantly and repeatably.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per step and job event (NDJSON).")
@click.pass_context
def play(ctx: click.Context, /, scenario: str, screenshots: Path | None, size: str, as_json: bool, **opts: Any) -> None:
    """Run SCENARIO (a TOML file, or a shipped one by name: tour, …) against the console, headless.

    Prints one line per step and job event. Exit 0 when every step passed, 1 when one failed
    (with the screen at that moment), 2 when the scenario file is malformed. The format is in
    the README ("Headless scenarios") and in console/scenario.py.
    """
    from console import scenario as scenarios

    cols, _, rows = size.partition("x")
    if not (cols.isdigit() and rows.isdigit() and int(cols) >= 40 and int(rows) >= 12):
        raise BadInput(f"--size {size!r}: give COLSxROWS, at least 40x12 (e.g. 120x40)")
    loaded = scenarios.load(scenarios.find(scenario))
    options = merged(ctx, **opts)
    backend = open_backend_from(options, live=True, repeatable=True)
    try:
        import asyncio

        from console.headless import play as run_scenario

        failed = asyncio.run(run_scenario(loaded, backend, size=(int(cols), int(rows)), screenshots=screenshots,
                                          as_json=as_json))
    finally:
        backend.close()
    if failed is not None:
        from backends.errors import OperationFailed

        raise OperationFailed(f"{loaded.path}: step {failed.index} failed: {failed.label}")


@cli.group()
def lab() -> None:
    """A two-host libvirt lab on this machine (root): up, status, down."""


@lab.command("up")
def lab_up() -> None:
    """Start both lab hosts and their guests; print the URIs."""
    from console.lab_cli import run

    run("up")


@lab.command("status")
def lab_status() -> None:
    """Print the lab's URIs, guests and problems (exit 1 when it is not up)."""
    from console.lab_cli import run

    run("status")


@lab.command("down")
def lab_down() -> None:
    """Remove everything the lab created."""
    from console.lab_cli import run

    run("down")


def _print_inventory(backend: Any, as_json: bool) -> None:
    inv = backend.snapshot()
    if as_json:
        from backends.export import inventory_json

        # Indented for a terminal; compact (the C encoder, 4x faster at 10,000 VMs) into a pipe.
        indent = 1 if sys.stdout.isatty() else None
        sys.stdout.write(inventory_json(inv, backend.capabilities, indent) + "\n")
    else:
        from console.inventory_text import print_inventory

        print_inventory(inv)
    from console.lost_hosts import report_lost

    if report_lost(inv):
        sys.exit(1)


def _console(opts: dict[str, Any]) -> None:
    from backends.gcpause import hold

    # No collection until the console's first frame: the start allocates ~200,000 objects (10,000
    # VMs) that stay, and passes over them found nothing but cost ~0.25 s; the app then freezes them.
    started = hold()
    try:
        _run_console(opts, started)
    finally:
        started()


def _run_console(opts: dict[str, Any], started: Callable[[], None]) -> None:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    backend = open_backend_from(opts, live=interactive)
    if not interactive:
        click.echo("hvc: no terminal attached; printing the inventory instead of the console", err=True)
        try:
            _print_inventory(backend, as_json=False)
        finally:
            backend.close()
        return
    from console.app import HvcApp

    try:
        HvcApp(backend, keymap=opts.get("keys"), started=started).run()
    finally:
        backend.close()


def _fail(message: str, code: int) -> None:
    from backends.uri import redact

    click.echo(f"hvc: error: {redact(message)}", err=True)
    sys.exit(code)


# Finalization runs four full collections over everything still alive: with 2,000 domains loaded,
# 0.2 s of `hvc inventory`. Frozen, objects are still freed as their modules are cleared; only
# those in reference cycles are left to the process's exit. What must be released (backends,
# connections, files) is closed explicitly before then.
atexit.register(gc.freeze)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, exit 2 for bad input, 1 for failures."""
    try:
        code = cli.main(args=argv, prog_name="hvc", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "hvc"
        _fail(f"{exc.format_message().rstrip('.')} (see '{where} --help')", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except BadInput as exc:
        _fail(exc.one_line(), 2)
    except HvcError as exc:
        _fail(exc.one_line(), exc.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # an internal error: one line here, the traceback in the log
        from console.log import log_exception

        _fail(f"internal error: {exc} (traceback in {log_exception(exc)})", 1)
    if isinstance(code, int) and code:
        sys.exit(code)


