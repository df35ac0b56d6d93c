"""S8 storage services, backend-neutral: identifiers, free VFs, and where a service may move.

A service's identifier is a MAC address: it is what an SR-IOV virtual function carries on the
wire (the PF sets it on the VF, ``ip link set PF vf N mac …``; libvirt writes it from the
``<interface type='hostdev'><mac address=…>``), and initiators find the target by it. Fleet
files require a locally administered unicast MAC (``02:…``, ``0a:…``): assigned by the operator,
so it never collides with a vendor's burned-in address.
"""

from __future__ import annotations

import re

from backends.errors import BadInput, NotFound
from backends.models import Host, Inventory, OwnerKind, PciDevice, StorageService, Vm
from backends.placement import find_host, plan_move

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def mac_problem(text: str) -> str:
    """Why ``text`` cannot be a service identifier, or an empty string when it can."""
    mac = text.strip().lower()
    if not _MAC.match(mac):
        return f"{text!r} is not a MAC address like 02:00:5e:10:00:01"
    first = int(mac[:2], 16)
    if first & 0x01:
        return f"{text!r} is a multicast MAC; a VF needs a unicast one"
    if not first & 0x02:
        return f"{text!r} is not locally administered (first byte must have bit 0x02 set, e.g. 02:…)"
    return ""


def find_service(inv: Inventory, name: str) -> StorageService:
    found = next((s for s in inv.services if name in (s.name, s.identifier)), None)
    if found is None:
        known = ", ".join(s.name for s in inv.services[:8]) or "none"
        raise NotFound(f"no storage service called {name!r}", hint=f"known services: {known} (`hvc services`)")
    return found


def carried(inv: Inventory) -> dict[tuple[str, str], StorageService]:
    """(host, VF address) → the service whose identifier that VF carries now."""
    return {(s.host, s.vf): s for s in inv.services if s.vf}


def free_vfs(inv: Inventory, host: str) -> tuple[PciDevice, ...]:
    """VFs on ``host`` back in their PF's pool: no VM owns them and they carry no identifier."""
    return free_vfs_by_host(inv).get(host, ())


def free_vfs_by_host(inv: Inventory) -> dict[str, tuple[PciDevice, ...]]:
    """``free_vfs`` for every host at once (one pass over the devices)."""
    taken = carried(inv)
    out: dict[str, list[PciDevice]] = {}
    for d in inv.devices:
        if d.is_vf and d.owner.kind is not OwnerKind.VM and (d.host, d.address) not in taken:
            out.setdefault(d.host, []).append(d)
    return {host: tuple(sorted(vfs, key=lambda d: d.address)) for host, vfs in out.items()}


def service_vm(inv: Inventory, service: StorageService) -> Vm | None:
    return next((v for v in inv.vms_on(service.host) if v.name == service.vm), None)


def check_destination(inv: Inventory, service: StorageService, dest: Host,
                      free: dict[str, tuple[PciDevice, ...]] | None = None, vm: Vm | None = None) -> PciDevice:
    """The VF on ``dest`` that would take the identifier; BadInput says why ``dest`` cannot.

    ``free`` (from ``free_vfs_by_host``) and ``vm`` save the lookups when checking many hosts."""
    if dest.name == service.host:
        raise BadInput(f"{service.name} already runs on {dest.name}", hint="pick another destination host")
    vm = vm or service_vm(inv, service)
    if vm is None:
        raise BadInput(f"{service.name}'s VM {service.vm} is not on {service.host}", hint="refresh and try again")
    if not vm.active:
        raise BadInput(f"{vm.name} is {vm.state.value}; moving a service live needs its VM running",
                       hint=f"start {vm.name} first")
    if service.vf is None:
        raise BadInput(f"{service.name} has no VF carrying {service.identifier} now",
                       hint="wait for the move in progress to finish")
    vfs = (free_vfs_by_host(inv) if free is None else free).get(dest.name, ())
    if not vfs:
        raise BadInput(f"{dest.name} has no free SR-IOV VF to carry {service.identifier}",
                       hint="free a VF there (hand it to the host) or pick a host with one")
    plan_move(inv, vm, dest)  # memory, vCPUs, host state
    return vfs[0]


def destinations(inv: Inventory, service: StorageService) -> list[tuple[Host, str | None, str]]:
    """Every other host as (host, the VF that would take the identifier, why not): one of the two is set."""
    out: list[tuple[Host, str | None, str]] = []
    free, vm = free_vfs_by_host(inv), service_vm(inv, service)
    for host in inv.hosts:
        if host.name == service.host:
            continue
        try:
            out.append((host, check_destination(inv, service, host, free, vm).address, ""))
        except BadInput as exc:
            out.append((host, None, exc.message))
    return out


def resolve(inv: Inventory, name: str, to_host: str) -> tuple[StorageService, Host, PciDevice]:
    """The service, its destination and the VF there, or BadInput/NotFound: nothing changed."""
    service = find_service(inv, name)
    dest = find_host(inv, to_host)
    return service, dest, check_destination(inv, service, dest)
