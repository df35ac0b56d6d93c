"""Simulated live migration: pre-copy rounds against a dirty rate, then switchover.

Each round copies what the previous round left dirty while the guest keeps dirtying pages.
It converges when the pages left would fit in the allowed downtime; with auto-converge the
guest is throttled a little more each round; with post-copy it switches after two rounds and
pulls the rest on demand. A VM that owns devices hands them to the host before switchover,
and keeps an image of each (S1) that matching hardware at the destination can restore.
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from backends import images
from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput
from backends.models import CellShare, DeviceImage, JobKind, JobResult, Outcome, PhaseChanged, VcpuPin, Vm
from backends.placement import Placement, find_host, plan_move
from backends.progress import Meter
from backends.requests import HandoffRequest, MigrateRequest
from backends.sim.devices import guest_address
from backends.sim.handoff_op import SimHandoff, device_key

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

PAGE_KIB = 4
TICK_S = 0.25
DEFAULT_BANDWIDTH_MIB_S = 4096  # 32 Gbit/s of migration network
MAX_DOWNTIME_S = 0.3
MAX_ROUNDS = 30


class SimMigrate(Operation):
    def __init__(self, backend: SimBackend, request: MigrateRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        if not vm.active:
            raise BadInput(f"{vm.name} is {vm.state.value}; live migration needs a running VM",
                           hint="start it first, or move it offline")
        dest = find_host(inv, request.to_host)
        self.plan: Placement = plan_move(inv, vm, dest)
        self.backend, self.vm, self.dest, self.request = backend, vm, dest.name, request
        bandwidth = request.bandwidth_mib_s or DEFAULT_BANDWIDTH_MIB_S
        if bandwidth <= 0:
            raise BadInput(f"bandwidth {bandwidth} MiB/s must be positive")
        self.bandwidth_pages = bandwidth * 1024 // PAGE_KIB
        # A guest's dirty rate is a property of its workload: seeded, so runs repeat.
        rng = random.Random(f"{backend.spec.seed}:{vm.name}:dirty")
        self.dirty_pages = int(DEFAULT_BANDWIDTH_MIB_S * 256 * rng.uniform(0.05, 0.5))
        phases = (("handoff",) if vm.devices else ()) + ("precopy", "switchover")
        devices = tuple(device_key(vm.host, a) for a in vm.devices)
        super().__init__(new_job(JobKind.MIGRATE, (vm.name, vm.host, dest.name, *devices), phases,
                                 f"migrate {vm.name} {vm.host} → {dest.name}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job = self.backend.clock, self.job
        started = clock.now()

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            return JobResult(job.id, outcome, reason, started, clock.now())

        for note in self.plan.notes:
            emit(PhaseChanged(job.id, "plan", note, at=clock.now()))
        if self.vm.devices:
            emit(PhaseChanged(job.id, "handoff", f"handing {', '.join(self.vm.devices)} to the host", at=clock.now()))
            handed = self._hand_off_devices(emit, cancel)
            if handed is not None:
                return result(handed.outcome, handed.reason)
        emit(PhaseChanged(job.id, "precopy", f"copying {self.vm.memory_kib // PAGE_KIB} pages", at=clock.now()))
        outcome = self._precopy(emit, cancel)
        if outcome is not None:
            return result(*outcome)
        emit(PhaseChanged(job.id, "switchover", f"pausing {self.vm.name} and resuming it on {self.dest}",
                          at=clock.now()))
        self._switch()
        return result(Outcome.SUCCEEDED)

    def _precopy(self, emit: Emit, cancel: threading.Event) -> tuple[Outcome, str] | None:
        clock = self.backend.clock
        meter = Meter(self.job.id, "pages", clock.now)
        total = self.vm.memory_kib // PAGE_KIB
        to_copy, dirtied, copied, dirty_rate = total, 0, 0, self.dirty_pages
        iteration, throttle = 1, 0.0
        while True:
            if cancel.is_set():
                return (Outcome.CANCELLED,
                        f"cancelled in round {iteration}; {self.vm.name} keeps running on {self.vm.host}")
            step = min(to_copy, int(self.bandwidth_pages * TICK_S))
            clock.sleep(TICK_S)
            to_copy -= step
            copied += step
            dirtied = min(total, dirtied + int(dirty_rate * TICK_S))
            remaining = to_copy + dirtied
            downtime = remaining / self.bandwidth_pages
            emit(meter.sample("precopy", copied, remaining, detail={
                "iteration": iteration, "dirty_rate": dirty_rate, "expected_downtime_ms": round(downtime * 1000),
                "throttle_percent": round(throttle * 100), "memory_total": total,
            }))
            if to_copy > 0:
                continue
            if downtime <= MAX_DOWNTIME_S or (self.request.postcopy and iteration >= 2):
                return None
            iteration += 1
            if iteration > MAX_ROUNDS:
                return (Outcome.FAILED, f"not converging after {MAX_ROUNDS} rounds: {self.vm.name} dirties "
                        f"{dirty_rate} pages/s against {self.bandwidth_pages} pages/s of bandwidth; "
                        f"retry with --auto-converge or --postcopy. It keeps running on {self.vm.host}")
            if self.request.auto_converge and iteration > 2:
                throttle = min(0.99, throttle + 0.2)
                dirty_rate = int(self.dirty_pages * (1 - throttle))
            to_copy, dirtied = dirtied, 0

    def _hand_off_devices(self, emit: Emit, cancel: threading.Event) -> JobResult | None:
        """S4 before switchover: each device drains, then goes to the host's driver stack."""
        for address in self.vm.devices:
            handoff = SimHandoff(self.backend, HandoffRequest(address, "host", host=self.vm.host))
            outcome = handoff.drain(emit, cancel, job_id=self.job.id, phase="handoff")
            if outcome.outcome is not Outcome.SUCCEEDED:
                return replace(outcome, reason=f"handoff of {address} {outcome.outcome.value}: {outcome.reason}; "
                                               f"{self.vm.name} keeps running on {self.vm.host}")
        return None

    def _images_left(self, vm: Vm) -> tuple[DeviceImage, ...]:
        """S1: each device the VM leaves behind is captured into an image that travels with it; an
        SR-IOV VF is not (it carries no guest state: a VF at the destination is provisioned instead)."""
        now = self.backend.clock.now()
        out = []
        for address in self.vm.devices:
            dev = self.backend.state.devices.get((self.vm.host, address))
            if dev is not None and not dev.is_vf:
                out.append(images.capture(dev, guest_address(vm, address), images.synthetic_registers(dev), now))
        return tuple(out)

    def _switch(self) -> None:
        with self.backend.lock:
            current = self.backend.state.vms[self.vm.name]
            moved = _placed(current, self.dest, self.plan, self.backend)
            moved = replace(moved, device_images=current.device_images + self._images_left(current))
            self.backend.state.vms[self.vm.name] = moved
            chains = self.backend.state.chains
            for key in [key for key in chains if key[0] == self.vm.name]:
                chains[key] = replace(chains[key], host=self.dest)
        self.backend.refresh()


def _placed(vm: Vm, dest: str, plan: Placement, backend: SimBackend) -> Vm:
    """The VM as it runs on ``dest``: vNUMA cells on the planned cells, pinning kept if it had one."""
    vnuma = tuple(replace(n, backing=(CellShare(plan.cells[n.id], n.memory_kib),)) for n in vm.vnuma)
    pins: list[VcpuPin] = []
    if vm.pinning:
        host = backend.snapshot().host(dest)
        taken = {c for other in backend.snapshot().vms_on(dest) for c in other.pinned_cpus()}
        for node in vm.vnuma or ():
            pins += _pin(node.vcpus, host.numa[plan.cells[node.id]].cpu_ids if host else (), taken)
        if not vm.vnuma and host:
            pins += _pin(tuple(range(vm.vcpus)), host.numa[plan.cells[0]].cpu_ids, taken)
    return replace(vm, host=dest, vnuma=vnuma, pinning=tuple(pins),
                   memory_nodeset=() if vm.vnuma else (plan.cells[0],), devices=())


def _pin(vcpus: tuple[int, ...], cpus: tuple[int, ...], taken: set[int]) -> list[VcpuPin]:
    free = [c for c in cpus if c not in taken] or list(cpus)
    out = []
    for i, vcpu in enumerate(vcpus):
        cpu = free[i % len(free)]
        taken.add(cpu)
        out.append(VcpuPin(vcpu, (cpu,)))
    return out
