"""Simulated device handoff (S4): drain in flight, hold, reassign, replay — nothing lost.

A seeded request stream (a backlog already in the device's queue, then arrivals from a few
flows) runs through ``backends.handoff.HoldingQueue`` on the injected clock, while the device
acts at its own rate. The simulator's state changes only once the handoff has finished; a
cancel aborts the queue, so the device stays with its owner and gets every held request back.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, find_device, new_job
from backends.errors import BadInput, NotFound
from backends.handoff import HandoffPhase, HoldingQueue
from backends.models import (
    Inventory,
    JobKind,
    JobResult,
    Outcome,
    Owner,
    OwnerKind,
    PciDevice,
    PhaseChanged,
    Vm,
    VmState,
)
from backends.progress import Meter
from backends.requests import HandoffRequest

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

TICK_S = 0.05
REBIND_S = 0.2  # unbind, rebind to the new owner's driver, remap the IOMMU
REPLAY_PER_S = 20_000  # held requests forwarded to the new owner per second
FLOWS = 4
STAGES = (HandoffPhase.DRAINING, HandoffPhase.REASSIGNING, HandoffPhase.REPLAYING)
BUILD_S = 0.3  # building the receiving driver stack, or verifying the old one let go
# S2 stage names: build the new stack, drain, reassign, the old stack relinquishes (then replay).
S2_TO_VM = ("building vfio stack", "draining", "attaching to VM", "host relinquished")
S2_TO_HOST = ("building host stack", "draining", "returning to host", "VM relinquished")


def device_key(host: str, address: str) -> str:
    """How a device appears in job targets: addresses repeat across hosts."""
    return f"{host}/{address}"


def owner_label(owner: Owner) -> str:
    """The name a handoff uses for an owner: a VM name, ``host``, ``vfio`` or ``unbound``."""
    if owner.kind is OwnerKind.VM:
        return owner.vm or "?"
    return owner.kind.value


class SimHandoff(Operation):
    """Hand ``request.device`` to ``request.to`` (a VM on the device's host, or ``host``)."""

    def __init__(self, backend: SimBackend, request: HandoffRequest) -> None:
        inv = backend.snapshot()
        device = find_device(inv, request.device, request.host)
        old = owner_label(device.owner)
        target = request.to.strip()
        if target == old:
            raise BadInput(f"{device.address} on {device.host} already belongs to {old}",
                           hint="pick another VM or 'host'")
        if target != "host":
            _check_target_vm(inv, target, device.host)
        assigned = [d.address for d in inv.devices_on(device.host)
                    if d.physfn == device.address and d.owner.kind is OwnerKind.VM]
        if assigned:
            raise BadInput(f"{device.address} is a physical function whose VFs {', '.join(assigned)} are assigned "
                           "to VMs", hint="hand those VFs to the host first")
        self.backend, self.device, self.old, self.target = backend, device, old, target
        to_host = target == "host" and old != "vfio"
        self.s2: tuple[str, ...] = S2_TO_VM if old == "host" else S2_TO_HOST if to_host else ()
        vms = tuple(v for v in (device.owner.vm, None if target == "host" else target) if v)
        phases = (self.s2[0], "draining", self.s2[2], self.s2[3], "replaying") if self.s2 else tuple(
            s.value for s in STAGES)
        super().__init__(new_job(JobKind.HANDOFF, (device_key(device.host, device.address), *vms), phases,
                                 f"hand {device.address} on {device.host} from {old} to {target}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        return self.drain(emit, cancel)

    def drain(self, emit: Emit, cancel: threading.Event, *, job_id: str | None = None,
              phase: str | None = None) -> JobResult:
        """Run the whole handoff and apply it; reusable as one phase of another job.

        A migration hands each device of its VM to the host before switchover with
        ``SimHandoff(backend, HandoffRequest(address, "host", host=vm.host)).drain(emit, cancel,
        job_id=self.job.id, phase="handoff")``: every event then carries the migration's job id
        and that phase name, with the handoff stage (draining, reassigning, replaying) in the
        message and in ``detail["stage"]``. Returns this handoff's result (under ``job_id``).

        S2, between the host and a VM: the new driver stack is built first while the old one
        still serves (``building vfio stack`` / ``building host stack``), the device drains and
        is reassigned (``attaching to VM`` / ``returning to host``), then the old stack must let
        go (``host relinquished`` / ``VM relinquished``) before held requests are replayed. A
        failure at any of these stages (``SimBackend.faults``) returns the device, and every held
        request, to the owner it had.
        """
        clock, jid = self.backend.clock, job_id or self.job.id
        started = clock.now()
        meter = Meter(jid, "requests", clock.now)
        rng = random.Random(f"{self.backend.spec.seed}:{self.device.host}:{self.device.address}:handoff")
        quiet = self.device.owner.kind not in (OwnerKind.VM, OwnerKind.HOST)  # nobody drives it
        flows = [f"{self.old}/flow-{i}" for i in range(FLOWS)]
        arrive_per_tick = 0.0 if quiet else rng.uniform(1_500, 3_000) * TICK_S
        act_per_tick = int(rng.uniform(3_500, 6_000) * TICK_S)
        queue = HoldingQueue(self.old)
        for _ in range(0 if quiet else rng.randint(600, 1_800)):  # the backlog already in the device's queue
            queue.arrive(rng.choice(flows))
        names = {s: self.s2[i + 1] if self.s2 and i < 2 else s.value for i, s in enumerate(STAGES)}
        stage, rebind_left, cancelled_at, failed_at = -1, REBIND_S, "", ""

        def announce(name: str, message: str) -> None:
            text = message if phase is None else f"{self.device.address} {name}: {message}"
            emit(PhaseChanged(jid, phase or name, text, at=clock.now()))

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(jid, outcome, reason, started, clock.now())

        def fault(name: str) -> str | None:
            return self.backend.faults.pop(name, None)

        if self.s2:
            build = self.s2[0]
            if phase is None:  # as a phase of another job, only the queue stages are announced
                announce(build, f"{self._new_stack()} is built for {self.device.address} while {self.old} still "
                                f"takes its requests")
            for _ in range(round(BUILD_S / TICK_S)):  # the old stack keeps taking requests meanwhile
                clock.sleep(TICK_S)
                for _ in range(int(arrive_per_tick * rng.uniform(0.7, 1.3))):
                    queue.arrive(rng.choice(flows))
            why = fault(build)
            if why:
                return result(Outcome.FAILED, f"failed while {build}: {why}; {self.device.address} stays with "
                                              f"{self.old}, nothing was held")
        queue.begin_handoff(self.target)

        def observe() -> None:
            nonlocal stage
            now = len(STAGES) if queue.phase is HandoffPhase.DONE else STAGES.index(queue.phase)
            while stage < min(now, len(STAGES) - 1):
                stage += 1
                announce(names[STAGES[stage]], self._message(STAGES[stage], queue))

        def give_back(at: str, how: str) -> None:
            nonlocal stage
            back = "takes back" if queue.phase is HandoffPhase.REPLAYING else "keeps"
            queue.abort()
            announce("aborting", f"{how} while {at}: {self.old} {back} {self.device.address}; "
                                 f"{queue.held + queue.in_flight:,} requests go back to it")
            stage = -1 if queue.busy else len(STAGES)
            observe()

        observe()
        while queue.busy or queue.in_flight:
            if cancel.is_set() and queue.busy and not queue.aborted:
                cancelled_at = names[queue.phase]
                give_back(cancelled_at, "cancelled")
            clock.sleep(TICK_S)
            if queue.busy:
                for _ in range(int(arrive_per_tick * rng.uniform(0.7, 1.3))):
                    queue.arrive(rng.choice(flows))
            if queue.phase is HandoffPhase.REASSIGNING:
                rebind_left -= TICK_S
                if rebind_left <= 1e-9:
                    rebind_left = REBIND_S
                    why = None if queue.aborted or failed_at else fault(names[HandoffPhase.REASSIGNING])
                    if why:
                        failed_at = f"failed while {names[HandoffPhase.REASSIGNING]}: {why}"
                        give_back(names[HandoffPhase.REASSIGNING], "failed")
                    else:
                        queue.reassign()
                        if self.s2 and not queue.aborted and not failed_at:
                            failed_at = self._relinquish(announce if phase is None else None, queue, fault)
                            if failed_at and queue.busy:
                                give_back(self.s2[3], "failed")
                            elif failed_at:  # nothing was held: hand it straight back the same lossless way
                                queue.begin_handoff(self.old)
                                announce("aborting", f"failed while {self.s2[3]}: {self.old} takes back "
                                                     f"{self.device.address}")
                                stage = -1
            elif queue.phase is HandoffPhase.REPLAYING:
                queue.replay(int(REPLAY_PER_S * TICK_S))
            queue.device_step(act_per_tick)
            observe()
            label = names.get(queue.phase, "aborting" if queue.aborted else "replaying") if queue.busy else (
                "aborting" if queue.aborted else "replaying")
            emit(meter.sample(phase or label, queue.completed, queue.in_flight + queue.held, held=queue.held,
                              detail={"stage": label, "in_flight": queue.in_flight, "held": queue.held,
                                      "replayed": queue.replayed, "owner": queue.owner}))
        lost = "none lost" if not queue.lost else f"{queue.lost:,} LOST"
        counts = f"{queue.completed:,} requests acted on, {queue.replayed:,} held and replayed, {lost}"

        if queue.lost:
            return result(Outcome.FAILED, f"{counts}: the handoff lost requests (a simulator bug)")
        if failed_at:
            return result(Outcome.FAILED, f"{failed_at}; {self.device.address} is back with {self.old}; {counts}")
        if queue.aborted and not failed_at:
            return result(Outcome.CANCELLED, f"cancelled while {cancelled_at}; {self.device.address} stays with "
                                             f"{self.old}; {counts}")
        problem = self._apply()
        if problem:
            return result(Outcome.FAILED, f"{problem}; {counts}")
        return result(Outcome.SUCCEEDED, f"{self.device.address} now belongs to {self.target}; {counts}")

    def _new_stack(self) -> str:
        if self.target == "host":
            return f"the host's driver ({_host_driver(self.backend, self.device) or 'its driver'})"
        return f"a vfio-pci stack for {self.target} (IOMMU domain, DMA mappings)"

    def _relinquish(self, announce: Callable[[str, str], None] | None, queue: HoldingQueue,
                    fault: Callable[[str], str | None]) -> str:
        """S2's last step: the old stack lets go before anything is replayed; '' or why it did not."""
        name = self.s2[3]
        old = "the host's driver" if self.old == "host" else self.old
        if announce is not None:
            announce(name, f"{old} no longer drives {self.device.address}; {queue.held:,} held requests wait "
                           f"for {self.target}")
        self.backend.clock.sleep(BUILD_S)
        why = fault(name)
        return f"failed while {name}: {why}" if why else ""

    def _message(self, stage: HandoffPhase, queue: HoldingQueue) -> str:
        if stage is HandoffPhase.DRAINING:
            return f"{queue.in_flight:,} requests in flight at {queue.owner}; new arrivals are held"
        if stage is HandoffPhase.REASSIGNING:
            return f"{self.device.address} has acted on all it was given; reassigning it to {queue.target}"
        return f"replaying {queue.held:,} held requests to {queue.owner} in arrival order"

    def _apply(self) -> str:
        """Record the new owner in the simulator; an empty string, or why it could not."""
        dev, target, address = self.device, self.target, self.device.address
        state = self.backend.state
        with self.backend.lock:
            current = state.devices.get((dev.host, address))
            if current is None or current.owner != dev.owner:
                return f"{address} changed owner meanwhile ({current.owner if current else 'gone'})"
            vm = state.vms.get(target)
            if target != "host" and (vm is None or vm.host != dev.host or vm.state not in _RECEIVERS):
                return f"{target} is no longer running on {dev.host}"
            if target == "host":
                owner = Owner(OwnerKind.HOST, driver=_host_driver(self.backend, current))
            else:
                owner = Owner(OwnerKind.VM, vm=target, driver="vfio-pci")
            state.devices[(dev.host, address)] = replace(current, owner=owner, driver=owner.driver)
            old_vm = state.vms.get(dev.owner.vm or "")
            if old_vm is not None:
                state.vms[old_vm.name] = replace(old_vm, devices=tuple(a for a in old_vm.devices if a != address))
            if vm is not None and target != "host" and address not in vm.devices:
                state.vms[vm.name] = replace(vm, devices=(*vm.devices, address))
        self.backend.refresh()
        return ""


_RECEIVERS = (VmState.RUNNING, VmState.PAUSED)




def _check_target_vm(inv: Inventory, name: str, host: str) -> Vm:
    named = [v for v in inv.vms if v.name == name]
    if not named:
        raise NotFound(f"no VM called {name!r}", hint=f"hand it to a VM on {host}, or to 'host'")
    vm = next((v for v in named if v.host == host), None)
    if vm is None:
        elsewhere = ", ".join(v.host for v in named)
        raise BadInput(f"{name} runs on {elsewhere}, not on {host} where the device is",
                       hint=f"migrate {name} to {host} first, or pick a VM on {host}")
    if vm.state not in _RECEIVERS:
        raise BadInput(f"{name} is {vm.state.value}; only a running or paused VM can receive a device",
                       hint=f"start {name} first")
    return vm


def _host_driver(backend: SimBackend, device: PciDevice) -> str | None:
    """The host driver the device had in the fleet spec, if known; else the one it has now."""
    if device.owner.kind is OwnerKind.HOST and device.driver:
        return device.driver
    for spec in backend.spec.devices:
        if spec.host != device.host:
            continue
        if device.physfn == spec.address:
            return spec.vf_driver
        if spec.address == device.address and spec.driver != "vfio-pci":
            return spec.driver
    return device.driver
