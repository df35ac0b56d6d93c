"""Load and validate a fleet file (TOML) into a ``FleetSpec``.

Every error is one ``FleetFileError`` line naming the file, the entry (``vms[3] 'db-01'``)
and what is wrong, so a person can fix the file without reading a traceback.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from backends.errors import BadInput, FleetFileError
from backends.models import SiteRole, VmState
from backends.services import mac_problem
from backends.sim.spec import (
    CellSpec,
    DeviceSpec,
    DiskSpec,
    FleetSpec,
    HostSpec,
    ImageSpec,
    ReplicaSpec,
    ServiceSpec,
    SiteSpec,
    VmSpec,
    VNodeSpec,
)
from backends.units import parse_size_kib

T = TypeVar("T")
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
_TOP = {"name", "seed", "sites", "hosts", "vms", "devices", "services"}
_PROTOCOLS = ("iscsi", "nvme-tcp", "nvme-rdma", "nfs", "smb")


def demo_fleet_path() -> Path:
    return Path(str(resources.files("backends.sim").joinpath("demo_fleet.toml")))


def load_fleet(path: Path) -> FleetSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FleetFileError(f"fleet file {path} does not exist", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError(f"cannot read fleet file {path}: {exc}") from None
    return parse_fleet(text, str(path))


def parse_fleet(text: str, source: str = "fleet") -> FleetSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetFileError(f"{source}: not valid TOML: {exc}") from None
    return _Loader(source).fleet(doc)


class _Entry:
    """Typed, checked access to one TOML table; every complaint names the entry."""

    def __init__(self, table: Any, where: str, allowed: set[str]) -> None:
        if not isinstance(table, dict):
            raise FleetFileError(f"{where}: must be a table, not {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise FleetFileError(
                f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(sorted(allowed))}"
            )
        self.table = table
        self.where = where

    def fail(self, message: str) -> FleetFileError:
        return FleetFileError(f"{self.where}: {message}")

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        if key not in self.table:
            if default is None:
                raise self.fail(f"missing {key!r}")
            return default
        value = self.table[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.fail(f"{key!r} must be {kind.__name__}, not {type(value).__name__}")
        return value  # type: ignore[no-any-return]

    def positive(self, key: str, default: int | None = None) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise self.fail(f"{key!r} must be positive, not {value}")
        return value

    def size(self, key: str, default: int | None = None) -> int:
        if key not in self.table and default is not None:
            return default
        raw = self.get(key, object)
        try:
            kib = parse_size_kib(raw if isinstance(raw, int | str) else str(raw))
        except BadInput as exc:
            raise self.fail(f"{key!r}: {exc.message}") from None
        if kib <= 0:
            raise self.fail(f"{key!r} must be a positive size")
        return kib

    def items(self, key: str) -> list[Any]:
        value = self.table.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{key!r} must be a list")
        return value


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def entries(self, doc: dict[str, Any], key: str, allowed: set[str]) -> list[_Entry]:
        raw = doc.get(key, [])
        if not isinstance(raw, list):
            raise FleetFileError(f"{self.source}: {key!r} must be an array of tables ([[{key}]])")
        out = []
        for i, table in enumerate(raw):
            name = table.get("name") or table.get("address") if isinstance(table, dict) else None
            label = f"{self.source}: {key}[{i}]" + (f" {name!r}" if name else "")
            out.append(_Entry(table, label, allowed))
        return out

    def fleet(self, doc: dict[str, Any]) -> FleetSpec:
        top = _Entry(doc, self.source, _TOP)
        sites = tuple(self.site(e) for e in self.entries(doc, "sites", {"name", "role"}))
        if not sites:
            raise FleetFileError(f"{self.source}: no [[sites]]", hint="add at least one site")
        _unique(sites, lambda s: s.name, f"{self.source}: site")
        site_names = {s.name for s in sites}
        host_keys = {"name", "site", "cpu_model", "cells", "smt", "sockets", "distances", "reserved",
                     "overcommit"}
        hosts = tuple(self.host(e, site_names) for e in self.entries(doc, "hosts", host_keys))
        if not hosts:
            raise FleetFileError(f"{self.source}: no [[hosts]]", hint="add at least one host")
        _unique(hosts, lambda h: h.name, f"{self.source}: host")
        by_host = {h.name: h for h in hosts}
        vm_keys = {"name", "host", "vcpus", "memory", "state", "vnuma", "cell", "cpu_cell",
                   "pinned", "disks", "replica", "images"}
        vms = tuple(self.vm(e, by_host) for e in self.entries(doc, "vms", vm_keys))
        _unique(vms, lambda v: v.name, f"{self.source}: VM")
        vm_host = {v.name: v.host for v in vms}
        dev_keys = {"host", "address", "vendor", "product", "class", "driver", "iommu_group",
                    "owner", "vfs", "vf_driver", "vf_owners"}
        devices = tuple(self.device(e, by_host, vm_host) for e in self.entries(doc, "devices", dev_keys))
        _unique(devices, lambda d: (d.host, d.address), f"{self.source}: device")
        vf_vms = {vm for d in devices for vm in d.vf_owners.values()}
        services: list[ServiceSpec] = []
        for e in self.entries(doc, "services", {"name", "vm", "identifier", "protocol"}):
            services.append(self.service(e, vm_host, vf_vms, services))
        known = {(d.host, d.address) for d in devices}
        for v in vms:
            for image in v.images:
                if (image.host, image.address) not in known:
                    raise FleetFileError(f"{self.source}: VM {v.name!r} has an image of {image.address} on "
                                         f"{image.host!r}, which is not one of the [[devices]]",
                                         hint="an image copies a listed device's identity")
        return FleetSpec(
            sites=sites, hosts=hosts, vms=vms, devices=devices,
            seed=top.get("seed", int, 0), name=top.get("name", str, "fleet"), services=tuple(services),
        )

    def service(self, e: _Entry, vm_host: dict[str, str], vf_vms: set[str], seen: list[ServiceSpec]) -> ServiceSpec:
        name, vm = e.get("name", str), e.get("vm", str)
        if vm not in vm_host:
            raise e.fail(f"vm {vm!r} is not one of the [[vms]]")
        if vm not in vf_vms:
            raise e.fail(f"vm {vm!r} owns no SR-IOV VF to carry the identifier; "
                         "give it one with vf_owners in [[devices]]")
        identifier = e.get("identifier", str).strip().lower()
        problem = mac_problem(identifier)
        if problem:
            raise e.fail(f"identifier {problem}")
        protocol = e.get("protocol", str, "iscsi")
        if protocol not in _PROTOCOLS:
            raise e.fail(f"protocol {protocol!r} must be one of {', '.join(_PROTOCOLS)}")
        for other in seen:
            if other.name == name:
                raise e.fail(f"service {name!r} is defined twice")
            if other.identifier == identifier:
                raise e.fail(f"identifier {identifier} is already {other.name!r}'s; identifiers are unique")
            if other.vm == vm:
                raise e.fail(f"vm {vm!r} already exports {other.name!r}; one service per VM")
        return ServiceSpec(name, vm, identifier, protocol)

    def site(self, e: _Entry) -> SiteSpec:
        role = e.get("role", str, "primary")
        if role not in SiteRole.__members__.values():
            raise e.fail(f"role {role!r} must be 'primary' or 'recovery'")
        return SiteSpec(e.get("name", str), SiteRole(role))

    def host(self, e: _Entry, sites: set[str]) -> HostSpec:
        site = e.get("site", str)
        if site not in sites:
            raise e.fail(f"site {site!r} is not one of the [[sites]] ({', '.join(sorted(sites))})")
        cells = []
        for i, raw in enumerate(e.items("cells")):
            c = _Entry(raw, f"{e.where} cells[{i}]", {"cpus", "memory", "hugepages_2m", "hugepages_1g"})
            cells.append(CellSpec(c.positive("cpus"), c.size("memory"),
                                  c.get("hugepages_2m", int, 0), c.get("hugepages_1g", int, 0)))
        if not cells:
            raise e.fail("has no cells; give cells = [{cpus = 16, memory = \"64G\"}, …]")
        smt = e.positive("smt", 2)
        if any(c.cpus % smt for c in cells):
            raise e.fail(f"every cell's cpus must be a multiple of smt ({smt})")
        rows = e.items("distances")
        if any(not isinstance(row, list) for row in rows):
            raise e.fail(f"distances must be a {len(cells)}×{len(cells)} matrix of positive integers")
        distances = tuple(tuple(row) for row in rows)
        if distances and (len(distances) != len(cells) or any(len(r) != len(cells) for r in distances)
                          or any(type(d) is not int or d <= 0 for r in distances for d in r)):
            raise e.fail(f"distances must be a {len(cells)}×{len(cells)} matrix of positive integers")
        overcommit = e.get("overcommit", float, 1.0)
        if not 1.0 <= overcommit <= 10.0:
            raise e.fail(f"overcommit {overcommit} must be between 1.0 and 10.0")
        return HostSpec(
            name=e.get("name", str), site=site, cpu_model=e.get("cpu_model", str, "Generic x86-64"),
            cells=tuple(cells), smt=smt, sockets=e.get("sockets", int, 0), distances=distances,
            reserved_kib=e.size("reserved", 4 * 1024 * 1024), overcommit=overcommit,
        )

    def vm(self, e: _Entry, hosts: dict[str, HostSpec]) -> VmSpec:
        host_name = e.get("host", str)
        host = hosts.get(host_name)
        if host is None:
            raise e.fail(f"host {host_name!r} is not one of the [[hosts]]")
        ncells = len(host.cells)
        vcpus, memory = e.positive("vcpus"), e.size("memory")
        state = e.get("state", str, "running")
        if state not in {"running", "paused", "shutoff"}:
            raise e.fail(f"state {state!r} must be running, paused or shutoff")
        vnuma = []
        for i, raw in enumerate(e.items("vnuma")):
            n = _Entry(raw, f"{e.where} vnuma[{i}]", {"vcpus", "memory", "cells"})
            cells = tuple(n.items("cells"))
            if not cells or any(not isinstance(c, int) or not 0 <= c < ncells for c in cells):
                raise n.fail(f"cells {list(cells)} must name cells of {host_name!r} (0-{ncells - 1})")
            vnuma.append(VNodeSpec(n.positive("vcpus"), n.size("memory"), cells))
        if vnuma and sum(n.vcpus for n in vnuma) != vcpus:
            raise e.fail(f"vnuma vcpus add up to {sum(n.vcpus for n in vnuma)}, not vcpus = {vcpus}")
        if vnuma and sum(n.memory_kib for n in vnuma) != memory:
            raise e.fail("vnuma memory does not add up to the VM's memory")
        cell, cpu_cell = e.get("cell", int, 0), e.get("cpu_cell", int, -1)
        for key, value in (("cell", cell), ("cpu_cell", cpu_cell)):
            if key in e.table and not 0 <= value < ncells:
                raise e.fail(f"{key} {value} is not a cell of {host_name!r} (0-{ncells - 1})")
        disks = []
        for i, raw in enumerate(e.items("disks")):
            d = _Entry(raw, f"{e.where} disks[{i}]", {"target", "size", "overlays"})
            overlays = d.get("overlays", int, 1)
            if not 0 <= overlays <= 8:
                raise d.fail(f"overlays {overlays} must be between 0 and 8")
            disks.append(DiskSpec(d.get("target", str), d.size("size"), overlays))
        replica = None
        if "replica" in e.table:
            r = _Entry(e.table["replica"], f"{e.where} replica",
                       {"to", "rpo_s", "lag_s", "missing", "shipping"})
            to = r.get("to", str)
            if to not in hosts:
                raise r.fail(f"to {to!r} is not one of the [[hosts]]")
            if hosts[to].site == host.site:
                raise r.fail(f"replicates to {to!r} at its own site {host.site!r}; pick a recovery host")
            if not disks:
                raise r.fail("the VM has no disks to replicate")
            replica = ReplicaSpec(to, r.get("rpo_s", float, 300.0), r.get("lag_s", float, 60.0),
                                  r.get("missing", int, 0), r.get("shipping", bool, False))
        images = []
        for i, raw in enumerate(e.items("images")):
            m = _Entry(raw, f"{e.where} images[{i}]", {"host", "address", "age_s"})
            if m.get("host", str) not in hosts:
                raise m.fail(f"host {m.get('host', str)!r} is not one of the [[hosts]]")
            images.append(ImageSpec(m.get("host", str), m.get("address", str).lower(), m.get("age_s", float, 86_400.0)))
        return VmSpec(
            name=e.get("name", str), host=host_name, vcpus=vcpus, memory_kib=memory,
            state=VmState(state), vnuma=tuple(vnuma), cell=cell,
            cpu_cell=cpu_cell if cpu_cell >= 0 else None, pinned=e.get("pinned", bool, False),
            disks=tuple(disks), replica=replica, images=tuple(images),
        )

    def device(self, e: _Entry, hosts: dict[str, HostSpec], vm_host: dict[str, str]) -> DeviceSpec:
        host = e.get("host", str)
        if host not in hosts:
            raise e.fail(f"host {host!r} is not one of the [[hosts]]")
        address = e.get("address", str).lower()
        if not _PCI.match(address):
            raise e.fail(f"address {address!r} is not a PCI address like 0000:3b:00.0")
        vfs = e.get("vfs", int, 0)
        if not 0 <= vfs <= 64:
            raise e.fail(f"vfs {vfs} must be between 0 and 64")
        raw_owners = e.get("vf_owners", dict, {})
        vf_owners: dict[int, str] = {}
        for key, vm in raw_owners.items():
            if not key.isdigit() or int(key) >= vfs:
                raise e.fail(f"vf_owners key {key!r} is not a VF index below {vfs}")
            vf_owners[int(key)] = self.owner(e, vm, host, vm_host)
        return DeviceSpec(
            host=host, address=address, vendor=e.get("vendor", str), product=e.get("product", str),
            device_class=e.get("class", str), driver=e.get("driver", str),
            iommu_group=e.get("iommu_group", int),
            owner=self.owner(e, e.get("owner", str, "host"), host, vm_host),
            vfs=vfs, vf_driver=e.get("vf_driver", str, "iavf"), vf_owners=vf_owners,
        )

    def owner(self, e: _Entry, owner: Any, host: str, vm_host: dict[str, str]) -> str:
        if owner in ("host", "vfio"):
            return str(owner)
        if not isinstance(owner, str) or owner not in vm_host:
            raise e.fail(f"owner {owner!r} must be 'host', 'vfio' or the name of a VM")
        if vm_host[owner] != host:
            raise e.fail(f"owner {owner!r} runs on {vm_host[owner]!r}, not on {host!r}")
        return owner


def _unique(items: tuple[T, ...], key: Callable[[T], object], what: str) -> None:
    seen: set[object] = set()
    for item in items:
        k = key(item)
        if k in seen:
            raise FleetFileError(f"{what} {k!r} is defined twice", hint="names must be unique")
        seen.add(k)
