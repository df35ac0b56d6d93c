"""Generate a large, plausible fleet (``--scale HOSTSxVMS``) for scale work and benchmarks."""

from __future__ import annotations

import random
import re

from backends.errors import BadInput
from backends.models import SiteRole, VmState
from backends.sim.spec import (
    CellSpec,
    DeviceSpec,
    DiskSpec,
    FleetSpec,
    HostSpec,
    ReplicaSpec,
    ServiceSpec,
    SiteSpec,
    VmSpec,
    VNodeSpec,
)

GIB = 1024 * 1024
_SHAPES = (  # (cpu model, sockets, cells as (threads, GiB))
    ("Intel Xeon Gold 6338", 2, ((32, 256), (32, 256))),
    ("AMD EPYC 7543 (NPS4)", 1, ((16, 128),) * 4),
    ("Intel Xeon Platinum 8380", 2, ((40, 512), (40, 512))),
    ("Intel Xeon Silver 4314", 2, ((32, 192), (32, 128))),
)
_MAX_HOSTS, _MAX_VMS = 2_000, 1_000
_VCPUS, _MEMORY_GIB, _DISK_GIB = (1, 2, 2, 4, 4, 8), (1, 2, 4, 4, 8), (20, 40, 80)  # drawn from evenly


def parse_scale(text: str) -> tuple[int, int]:
    """'100x100' → (100 hosts, 100 VMs per host)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"--scale {text!r} is not HOSTSxVMS", hint="write it like 100x100")
    hosts, vms = int(match[1]), int(match[2])
    if not (2 <= hosts <= _MAX_HOSTS and 0 <= vms <= _MAX_VMS):
        raise BadInput(
            f"--scale {text!r} is out of range",
            hint=f"use 2–{_MAX_HOSTS} hosts and 0–{_MAX_VMS} VMs per host",
        )
    return hosts, vms


def generate_fleet(hosts: int, vms_per_host: int, seed: int = 0) -> FleetSpec:
    """A primary site with most hosts and a recovery site with a fifth of them (at least one)."""
    rng = random.Random(seed)
    n_recovery = max(1, hosts // 5)
    sites = (SiteSpec("site-a", SiteRole.PRIMARY), SiteSpec("site-b", SiteRole.RECOVERY))
    host_specs: list[HostSpec] = []
    for i in range(hosts):
        recovery = i >= hosts - n_recovery
        model, sockets, cells = _SHAPES[i % len(_SHAPES)]
        host_specs.append(HostSpec(
            name=f"{'b' if recovery else 'a'}-hv{i + 1:04d}", site="site-b" if recovery else "site-a",
            cpu_model=model, sockets=sockets,
            cells=tuple(CellSpec(t, g * GIB) for t, g in cells),
            distances=() if len(cells) <= 2 else tuple(
                tuple(10 if a == b else 12 for b in range(len(cells))) for a in range(len(cells))
            ),
        ))
    recovery_hosts = [h.name for h in host_specs if h.site == "site-b"]
    vms: list[VmSpec] = []
    devices: list[DeviceSpec] = []
    services: list[ServiceSpec] = []
    draw = rng.random  # picks index by one draw each: Random.choice costs ~5 times as much, 10,000 times over
    disk_specs: dict[tuple[int, int], tuple[DiskSpec]] = {}  # alike disks share one (frozen) spec
    for n, h in enumerate(host_specs):
        budget = [c.memory_kib - h.reserved_kib for c in h.cells]
        nic_owners: dict[int, str] = {}
        for j in range(vms_per_host):
            name = f"{h.name}-vm{j + 1:03d}"
            vcpus = _VCPUS[int(draw() * len(_VCPUS))]
            memory = _MEMORY_GIB[int(draw() * len(_MEMORY_GIB))] * GIB
            cell = j % len(h.cells)
            vnuma: tuple[VNodeSpec, ...] = ()
            if vcpus >= 4 and len(h.cells) > 1 and draw() < 0.15:
                half = memory // 2
                vnuma = (VNodeSpec(vcpus // 2, half, (0,)), VNodeSpec(vcpus - vcpus // 2, memory - half, (1,)))
            state = VmState.RUNNING if draw() < 0.85 else VmState.SHUTOFF
            needs = {n.cells[0]: n.memory_kib for n in vnuma} or {cell: memory}
            if state is VmState.RUNNING:
                if any(budget[c] < kib for c, kib in needs.items()):
                    state = VmState.SHUTOFF
                else:
                    for c, kib in needs.items():
                        budget[c] -= kib
            replica = None
            if h.site == "site-a" and draw() < 0.2:
                replica = ReplicaSpec(recovery_hosts[int(draw() * len(recovery_hosts))], 300.0, 5 + 595 * draw())
            if len(nic_owners) < 8 and draw() < 0.05:
                nic_owners[len(nic_owners)] = name
            shape = (_DISK_GIB[int(draw() * len(_DISK_GIB))], int(draw() * 4))
            disks = disk_specs.get(shape) or disk_specs.setdefault(shape, (DiskSpec("vda", shape[0] * GIB, shape[1]),))
            vms.append(VmSpec(name, h.name, vcpus, memory, state, vnuma, cell, None, bool(vnuma), disks, replica))
        devices.append(DeviceSpec(
            host=h.name, address="0000:18:00.0", vendor="Intel Corporation",
            product="Ethernet Controller E810-C for QSFP", device_class="Ethernet controller",
            driver="ice", iommu_group=20, vfs=8, vf_owners=nic_owners,
        ))
        if nic_owners:  # the first VM with a VF on each host exports storage over it
            services.append(ServiceSpec(f"{h.name}-svc", nic_owners[0], f"02:5e:{n >> 8:02x}:{n & 0xff:02x}:00:01",
                                        "nvme-tcp" if n % 2 else "iscsi"))
    return FleetSpec(tuple(sites), tuple(host_specs), tuple(vms), tuple(devices), seed, f"scale-{hosts}x{vms_per_host}",
                     tuple(services))
