"""One registry of actions: it feeds key bindings (with ids, so users can remap them),
the footer, the `?` help and the `:` command palette. Screens add their own scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class Action:
    id: str  # the binding id users remap in [keys]; also the action name (action_<id>)
    keys: str  # default keys, comma-separated, in Textual's key names
    description: str
    scope: str = "app"  # "app", or the screen it belongs to
    footer: bool = True
    destructive: bool = False
    mutating: bool = False  # changes a VM, device or replica: refused at the key in read-only mode


ACTIONS: tuple[Action, ...] = (
    Action("fleet", "1", "Fleet view"),
    Action("vms", "2", "VMs view"),
    Action("devices", "3", "Devices view"),
    Action("replication", "4", "Replication view"),
    Action("jobs", "5", "Jobs view"),
    Action("services", "6", "Storage services view"),
    Action("command", "colon", "Command palette", footer=False),
    Action("filter", "slash", "Filter this list", footer=False),
    Action("help", "question_mark", "Keys"),
    Action("refresh", "r", "Refresh now", footer=False),
    Action("quit", "q", "Quit"),
    Action("open_host", "enter", "Open host (NUMA map)", scope="fleet"),
    Action("back", "escape", "Back", scope="host"),
    Action("host_migrate", "M", "Migrate a VM off this host", scope="host", mutating=True),
    Action("sort", "o", "Sort by next column", scope="vms"),
    Action("vm_start", "S", "Start VM", scope="vms", mutating=True),
    Action("vm_shutdown", "D", "Shut down VM", scope="vms", destructive=True, mutating=True),
    Action("vm_reboot", "R", "Reboot VM", scope="vms", destructive=True, mutating=True),
    Action("vm_force_off", "F", "Force off VM", scope="vms", destructive=True, mutating=True),
    Action("vm_pause", "P", "Pause / resume VM", scope="vms", mutating=True),
    Action("vm_migrate", "M", "Migrate VM to another host", scope="vms", mutating=True),
    Action("vm_rebalance", "N", "Rebalance a vNUMA cell", scope="vms", mutating=True),
    Action("vm_balloon", "B", "Balloon VM memory", scope="vms", mutating=True),
    Action("device_handoff", "H", "Hand off device", scope="devices", mutating=True),
    Action("device_op", "O", "Device op", scope="devices", mutating=True),
    Action("device_detach", "D", "Detach to image", scope="devices", destructive=True, mutating=True),
    Action("device_attach", "A", "Attach hardware", scope="devices", mutating=True),
    Action("replica_sync", "s", "Sync replica now", scope="replication", mutating=True),
    Action("replica_test_failover", "t", "Test failover (throwaway copy)", scope="replication", mutating=True),
    Action("replica_failover", "F", "Planned failover", scope="replication", destructive=True, mutating=True),
    Action("job_cancel", "x", "Cancel job", scope="jobs", destructive=True, mutating=True),
    Action("open_vm", "enter", "Go to the service's VM", scope="services"),
    Action("service_move", "M", "Move service to another host", scope="services", mutating=True),
)

SCOPES = {a.scope for a in ACTIONS}
IDS = {a.id for a in ACTIONS}
MUTATING = frozenset(a.id for a in ACTIONS if a.mutating)


def in_scope(scope: str) -> tuple[Action, ...]:
    return tuple(a for a in ACTIONS if a.scope == scope)


def bindings(scope: str) -> list[Binding]:
    """Textual bindings for one scope; ids let ``App.set_keymap`` remap them."""
    return [Binding(a.keys, a.id, a.description, show=a.footer, id=a.id) for a in in_scope(scope)]


def key_label(action: Action, keymap: dict[str, str]) -> str:
    keys = keymap.get(action.id, action.keys)
    names = {"colon": ":", "slash": "/", "question_mark": "?", "escape": "esc", "enter": "enter"}
    return ",".join(names.get(k.strip(), k.strip()) for k in keys.split(","))
