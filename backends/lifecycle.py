"""VM lifecycle rules shared by every backend: which action makes sense in which state."""

from __future__ import annotations

from backends.errors import BadInput
from backends.models import Vm, VmState
from backends.requests import LifecycleAction

_ALLOWED: dict[LifecycleAction, frozenset[VmState]] = {
    LifecycleAction.START: frozenset({VmState.SHUTOFF, VmState.CRASHED}),
    LifecycleAction.SHUTDOWN: frozenset({VmState.RUNNING, VmState.PAUSED}),
    LifecycleAction.REBOOT: frozenset({VmState.RUNNING}),
    LifecycleAction.FORCE_OFF: frozenset({VmState.RUNNING, VmState.PAUSED, VmState.CRASHED, VmState.SUSPENDED}),
    LifecycleAction.PAUSE: frozenset({VmState.RUNNING}),
    LifecycleAction.RESUME: frozenset({VmState.PAUSED}),
}

RESULT: dict[LifecycleAction, VmState] = {
    LifecycleAction.START: VmState.RUNNING,
    LifecycleAction.SHUTDOWN: VmState.SHUTOFF,
    LifecycleAction.REBOOT: VmState.RUNNING,
    LifecycleAction.FORCE_OFF: VmState.SHUTOFF,
    LifecycleAction.PAUSE: VmState.PAUSED,
    LifecycleAction.RESUME: VmState.RUNNING,
}


def allowed(vm: Vm, action: LifecycleAction) -> bool:
    return vm.state in _ALLOWED[action]


def check(vm: Vm, action: LifecycleAction) -> None:
    """Refuse an action that makes no sense in the VM's state, before anything changes."""
    if not allowed(vm, action):
        states = ", ".join(sorted(s.value for s in _ALLOWED[action]))
        raise BadInput(f"cannot {action.value} {vm.name}: it is {vm.state.value}",
                       hint=f"{action.value} needs a VM that is {states}")
