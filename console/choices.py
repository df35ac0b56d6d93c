"""Targets an operator can pick for an operation, each checked by the backend first.

A choice that would be refused carries the backend's reason, so the picker shows why
instead of offering something that fails.
"""

from __future__ import annotations

from collections.abc import Callable

from backends.base import Backend
from backends.errors import HvcError
from backends.models import Inventory, OwnerKind, PciDevice, Vm
from backends.placement import plan_move
from backends.requests import HandoffRequest, RebalanceRequest, Request
from backends.units import format_kib

Choice = tuple[str, str, str | None]  # value, label, why it cannot work


def _why(check: Callable[[], object]) -> str | None:
    try:
        check()
    except HvcError as exc:
        return exc.message
    return None


def migration_targets(inv: Inventory, vm: Vm) -> list[Choice]:
    out = []
    for host in inv.hosts:
        if host.name == vm.host:
            continue
        free = format_kib(host.free_kib)
        out.append((host.name, f"{host.name}  ({host.site}, {free} free)", _why(lambda h=host: plan_move(inv, vm, h))))
    return sorted(out, key=lambda c: c[2] is not None)


def rebalance_targets(backend: Backend, inv: Inventory, vm: Vm) -> list[Choice]:
    host = inv.host(vm.host)
    nodes = [n.id for n in vm.vnuma] or [0]
    out: list[Choice] = []
    for node in nodes:
        for cell in host.numa if host else ():
            request: Request = RebalanceRequest(vm.name, node, to_cell=cell.id)
            label = f"vNUMA cell {node} → cell {cell.id}  ({format_kib(cell.free_kib)} free)"
            out.append((f"{node}:{cell.id}", label, _why(lambda r=request: backend.prepare(r))))
    return sorted(out, key=lambda c: c[2] is not None)


def handoff_targets(backend: Backend, inv: Inventory, device: PciDevice) -> list[Choice]:
    names = ["host"] + [v.name for v in inv.vms_on(device.host) if v.active]
    out: list[Choice] = []
    for name in names:
        if name == (device.owner.vm if device.owner.kind is OwnerKind.VM else "host"):
            continue
        request = HandoffRequest(device.address, name, host=device.host)
        label = "the host's driver stack" if name == "host" else name
        out.append((name, label, _why(lambda r=request: backend.prepare(r))))
    return sorted(out, key=lambda c: c[2] is not None)
