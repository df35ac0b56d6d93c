"""The Textual app: routes snapshots to the current view, and actions to the backend."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Mapping
from importlib import import_module

from textual import on, work
from textual.actions import ActionParseResult
from textual.app import App
from textual.dom import DOMNode
from textual.screen import Screen

from backends.analysis import Alert
from backends.base import Backend, Change, Operation
from backends.errors import HvcError
from backends.models import Inventory, Job, JobEvent, JobResult, Outcome, Vm
from backends.requests import LifecycleAction, LifecycleRequest, MigrateRequest, Request
from console import audit
from console.actions import IDS, MUTATING, bindings
from console.analyst import Analyst
from console.choices import Choice, migration_targets
from console.internal_error import report
from console.jobs import JobRunner
from console.messages import BackendFailed, InventoryUpdated, JobFinished, JobProgressed
from console.off_ui import off_ui
from console.palette import ActionCommands
from console.screens.base import InventoryScreen
from console.screens.fleet import FleetScreen

REFRESH_S = 2.0
SWITCH_INTERVAL_S = 0.001  # see responsive()


def responsive() -> None:
    """Keep the UI loop responsive while backend threads compute (refreshes, analysis, jobs).

    The loop gives up the GIL at every select(), and taking it back waits up to the switch
    interval when another thread is busy: at the default 5 ms a key's few loop turns could cost
    tens of milliseconds. And what the start built (the first snapshot, the views; 10,000 VMs are
    ~200,000 objects, long-lived) is moved out of the collector's sight, as ``open_backend`` does
    for the fleet: a full collection scanning it paused every thread for 50+ ms. Objects freed
    later are still freed by their reference counts.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.freeze()


def _view(module: str, name: str) -> Callable[[], Screen[None]]:
    """A view imported when it is first shown: the console starts on the Fleet view, and the
    others' modules (and their widgets) need not be loaded before its first frame."""

    def make() -> Screen[None]:
        screen: type[Screen[None]] = getattr(import_module(f"console.screens.{module}"), name)
        return screen()

    return make


class HvcApp(App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "hvc"
    MODES = {  # noqa: RUF012 - Textual reads these as class attributes
        "fleet": FleetScreen,
        "vms": _view("vms", "VmsScreen"),
        "devices": _view("devices", "DevicesScreen"),
        "replication": _view("replication", "ReplicationScreen"),
        "jobs": _view("jobs", "JobsScreen"),
        "services": _view("services", "ServicesScreen"),
    }
    DEFAULT_MODE = "fleet"
    BINDINGS = bindings("app")
    COMMANDS = {ActionCommands}  # noqa: RUF012
    COMMAND_PALETTE_BINDING = "ctrl+p"

    def __init__(self, backend: Backend, *, refresh_s: float = REFRESH_S, keymap: dict[str, str] | None = None,
                 started: Callable[[], None] = lambda: None) -> None:
        """``started`` is called once, after the first frame (or at exit, if there never was one):
        the command line holds the garbage collector until then (``gcpause.hold``)."""
        super().__init__()
        self._started = started
        self.backend = backend
        self.refresh_s = refresh_s
        self.inventory: Inventory | None = backend.snapshot()
        self.analyst = Analyst(self.inventory)
        self.alerts: tuple[Alert, ...] = self.analyst.last.alerts  # once per snapshot, for every view
        self.cpu_use: dict[str, float] = {}  # host → busy fraction, from the last two snapshots
        self.jobs = JobRunner(audit=lambda job, result: audit.record_job(job, result, backend.name))
        self.jobs.listen(self._job_event)
        self.keymap = {k: v for k, v in (keymap or {}).items() if k in IDS}
        self.unknown_keys = sorted(set(keymap or {}) - IDS)
        self.preparing = 0  # checks running off the UI thread (console/off_ui.py)
        self._switch_interval = sys.getswitchinterval()

    def on_mount(self) -> None:
        self.sub_title = self.backend.name + (" · read-only" if self.backend.read_only else "")
        if self.keymap:
            self.set_keymap(self.keymap)
        if self.unknown_keys:
            self.notify(f"[keys] in the config names unknown actions: {', '.join(self.unknown_keys)}; "
                        "they are ignored", severity="warning", timeout=8, markup=False)
        self._unwatch = self.backend.watch(self._on_change)
        # The snapshot the view shows was just taken: refresh after its first frame, not against it
        # (at 10,000 VMs a refresh holds the GIL for ~0.3 s).
        self.call_after_refresh(self.poll)
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        responsive()
        self._started()

    def on_unmount(self) -> None:
        self._started()
        self._unwatch()
        sys.setswitchinterval(self._switch_interval)
        gc.unfreeze()  # the app is done with what it froze (in tests, app after app, it would pile up)

    # -- keeping the inventory fresh ---------------------------------------------------

    def _on_change(self, _change: Change) -> None:
        """Called from backend threads; post_message is the thread-safe way in."""
        self._post_snapshot(self.backend.snapshot())

    def _post_snapshot(self, inv: Inventory) -> None:
        """Post a snapshot with what is derived from it, computed here (a backend or worker thread,
        not the UI loop) and once per snapshot: a refresh also notifies a change with the same one."""
        if inv is self.inventory:
            return  # already shown
        self.post_message(InventoryUpdated(self.analyst.analyse(inv)))

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        """One refresh off the UI loop; the next is armed only after this one finished."""
        try:
            self._post_snapshot(self.backend.refresh())
        except HvcError as exc:
            self.post_message(BackendFailed(exc.one_line()))
        except Exception as exc:  # a bug, not a host problem: report it and keep refreshing
            self.call_from_thread(report, self, exc, "refresh")
        finally:
            self.call_from_thread(self.set_timer, self.refresh_s, self.poll)

    @on(InventoryUpdated)
    def _updated(self, message: InventoryUpdated) -> None:
        if message.inventory is self.inventory:
            return  # the same snapshot again (a refresh also notifies a change): nothing to redo
        analysed = message.analysed
        self.inventory, self.alerts, self.cpu_use = analysed.inventory, analysed.alerts, analysed.cpu_use
        if self.screen_stack and isinstance(self.screen, InventoryScreen):  # no stack: the app is closing
            try:
                self.screen.show(analysed.inventory)
            except Exception as exc:
                report(self, exc, f"the {self.screen.SCOPE} view's refresh")

    @on(BackendFailed)
    def _failed(self, message: BackendFailed) -> None:
        if isinstance(self.screen, InventoryScreen):
            self.screen.set_status(f"refresh failed: {message.error}", error=True)

    # -- navigation --------------------------------------------------------------------

    async def run_action(self, action: str | ActionParseResult, default_namespace: DOMNode | None = None,
                         namespaces: Mapping[str, DOMNode] | None = None) -> bool:
        """Every key binding and the `:` palette run actions through here; what one raises
        becomes an error panel instead of ending the app (Textual's default)."""
        name = (action if isinstance(action, str) else action[1]).split("(")[0].rsplit(".", 1)[-1]
        if self.backend.read_only and name in MUTATING:  # before any picker or dialog asks for more
            reason = f"refusing {name.replace('_', ' ')}: the console is read-only (--read-only or read_only = true)"
            audit.record_refusal(name, name, reason, self.backend.name)
            self._status(reason, error=True)
            return True
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except Exception as exc:
            report(self, exc, f"action {action if isinstance(action, str) else action[1]!r}")
            return True

    def action_fleet(self) -> None:
        self.switch_mode("fleet")

    def action_vms(self) -> None:
        self.switch_mode("vms")

    def action_devices(self) -> None:
        self.switch_mode("devices")

    def action_replication(self) -> None:
        self.switch_mode("replication")

    def action_jobs(self) -> None:
        self.switch_mode("jobs")

    def action_services(self) -> None:
        self.switch_mode("services")

    def action_refresh(self) -> None:
        self.poll()

    def action_command(self) -> None:
        self.action_command_palette()

    def action_filter(self) -> None:
        if isinstance(self.screen, InventoryScreen):
            self.screen.action_filter()

    def action_help(self) -> None:
        from console.screens.dialogs import HelpScreen

        self.push_screen(HelpScreen(getattr(self.screen, "SCOPE", "app"), self.keymap))

    def open_host(self, host: str) -> None:
        from console.screens.host import HostScreen

        self.push_screen(HostScreen(host))

    # -- operations --------------------------------------------------------------------

    def lifecycle(self, vm: Vm, action: LifecycleAction) -> None:
        question = f"{action.value.capitalize()} {vm.name} on {vm.host}?" if action.destructive else None
        self.operate(LifecycleRequest(vm.name, action, host=vm.host), question)

    def pick_migration(self, vm: Vm) -> None:
        """Pick a destination (hosts that cannot take it say why), confirm, migrate."""
        if self.inventory is None:
            return
        from console.screens.picker import PickerScreen

        def chosen(host: str | None) -> None:
            if host:
                self.operate(MigrateRequest(vm.name, host), f"Live-migrate {vm.name} to {host}?")

        self.push_screen(PickerScreen(f"Migrate {vm.name} from {vm.host} to…", migration_targets(self.inventory, vm)),
                         chosen)

    def pick(self, title: str, choices: Callable[[], list[Choice]], chosen: Callable[[str | None], None],
             empty: str = "") -> None:
        """A picker whose choices the backend checks (off the UI thread); ``empty``: the status when there are none."""

        from console.screens.picker import PickerScreen

        def show(found: list[Choice]) -> None:
            if not found and empty:
                self._status(empty)
            else:
                self.push_screen(PickerScreen(title, found), chosen)

        off_ui(self, choices, show, f"checking the choices with the hosts: {title}")

    def operate(self, request: Request, question: str | None = None) -> None:
        """Check the request (off the UI thread: it may ask a slow host), show what will happen
        when asked to, then run it as a job."""

        def prepare() -> Operation | HvcError:
            try:
                return self.backend.prepare(request)
            except HvcError as exc:
                return exc

        off_ui(self, prepare, lambda op: self._prepared(request, op, question),
               f"checking {request.kind.value} with the host")

    def _prepared(self, request: Request, op: Operation | HvcError, question: str | None) -> None:
        if isinstance(op, HvcError):
            audit.record_refusal(request.kind.value, str(request), op.one_line(), self.backend.name)
            self._status(op.one_line(), error=True)
            return
        if question is None:
            self._start(op)
            return

        from console.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._start(op)
            else:
                self._status(f"{op.job.description}: not done")

        self.push_screen(ConfirmScreen(question, f"{op.job.description}\nphases: {' → '.join(op.job.phases)}"),
                         answered)

    def _start(self, op: Operation) -> None:
        try:
            record = self.jobs.start(op)
        except HvcError as exc:
            self._status(exc.one_line(), error=True)
            return
        self._status(f"{record.job.id}: {record.job.description}… (5 shows jobs)")

    def _job_event(self, job: Job, event: JobEvent) -> None:
        """From job threads: progress coalesces per job; the end is its own message."""
        if isinstance(event, JobResult):
            self.post_message(JobFinished(job, event))
        else:
            self.post_message(JobProgressed(job))

    @on(JobProgressed)
    def _job_progressed(self, _message: JobProgressed) -> None:
        if self._on_jobs_view():
            self.screen.show_jobs()  # type: ignore[attr-defined]

    @on(JobFinished)
    def _job_finished(self, message: JobFinished) -> None:
        if not self.screen_stack:  # a job cancelled as the app closes: nothing left to show it on
            return
        try:
            self._show_finished(message)
        except Exception as exc:
            report(self, exc, f"showing the end of {message.job.id}")
        self.poll()

    def _show_finished(self, message: JobFinished) -> None:
        result, job = message.result, message.job
        if result.outcome is Outcome.SUCCEEDED:
            self._status(f"{job.id}: {job.description} — done in {result.duration_s:.1f}s")
        else:
            self._status(f"{job.id}: {job.description} — {result.outcome.value}: {result.reason}", error=True)
        if self._on_jobs_view():
            self.screen.show_jobs()  # type: ignore[attr-defined]

    def _on_jobs_view(self) -> bool:
        from console.screens.jobs import JobsScreen

        return isinstance(self.screen, JobsScreen)

    def show_status(self, text: str, error: bool = False) -> None:
        self._status(text, error)

    def _status(self, text: str, error: bool = False) -> None:
        if isinstance(self.screen, InventoryScreen):
            self.screen.set_status(text, error)
        if error:
            self.notify(text, severity="error", timeout=6, markup=False)  # names and errors as they are
