"""Moving or resizing a running guest's memory on its libvirt host (vNUMA rebalancing).

What libvirt allows on a *running* guest, and therefore what this does:

- **Placement** (``to_cell``): ``setNumaParameters({"numa_nodeset": "<cell>"}, LIVE)``
  changes the guest-wide ``<numatune><memory nodeset>``, and only in ``restrictive`` mode
  (libvirt 9: "change of nodeset for running domain requires restrictive numa mode"; the
  kernel then migrates the pages through the cpuset cgroup). There is no live change of a
  single vNUMA cell's ``<memnode>``: a guest with one is refused, naming the definition edit
  that would do it. So for a guest with several vNUMA cells and no ``<memnode>`` the whole
  guest moves, and the job says so. The definition is not changed (LIVE only): the next
  boot uses the configured nodeset again.
- **Size** (``memory_kib``): ``setMemoryFlags(kib, LIVE)`` sets the balloon target, within
  the guest's maximum memory. The balloon resizes the whole guest, so a guest with several
  vNUMA cells is refused; one without a balloon device is refused. The guest OS must
  follow the balloon: if it does not within ``BALLOON_TIMEOUT_S`` the old target is
  restored and the job fails.
- Asking for what already is (the cell the memory is on, the size it has) succeeds
  without changing anything, after checking.

Progress: when the host is this machine, pages per NUMA node come from
``/proc/<qemu pid>/numa_maps`` (anonymous, memfd and huge-page mappings of the QEMU process,
counted in 4 KiB pages; QEMU's own small allocations are included), the pid from the
daemon's ``<run dir>/qemu/<name>.pid``, checked against the guest's UUID on the QEMU command
line. For a remote host only the phases are reported.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, HostUnreachable, NotFound
from backends.libvirt.migrate import is_local
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.models import JobKind, JobResult, NumaCell, Outcome, PhaseChanged
from backends.progress import Meter
from backends.requests import RebalanceRequest
from backends.units import format_kib, parse_cpuset

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

_Result = Callable[..., JobResult]

PAGE_KIB = 4
SAMPLE_S = 0.3
MOVE_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # pages stop moving for this long: the kernel has done what it can
BALLOON_TIMEOUT_S = 30.0
BALLOON_SLACK_KIB = 1024
MIN_MEMORY_KIB = 64 * 1024
_NODE = re.compile(r"\bN(\d+)=(\d+)")
_PAGESIZE = re.compile(r"\bkernelpagesize_kB=(\d+)")


# --- /proc helpers (pure parsing is unit-tested) -------------------------------------------


def pages_per_node(numa_maps: str) -> dict[int, int]:
    """4 KiB pages per NUMA node of a process's anonymous, memfd and huge-page mappings."""
    out: dict[int, int] = {}
    for line in numa_maps.splitlines():
        if "file=" in line and "file=/memfd:" not in line and " huge" not in line:
            continue  # binaries, libraries and other files: not guest memory
        size = _PAGESIZE.search(line)
        scale = (int(size.group(1)) // PAGE_KIB) if size else 1
        for node, count in _NODE.findall(line):
            out[int(node)] = out.get(int(node), 0) + int(count) * max(1, scale)
    return out


def pid_files(uri: str, name: str) -> list[Path]:
    """Where a local daemon at ``uri`` writes ``name``'s QEMU pid."""
    parts = urlsplit(uri)
    socket = parse_qs(parts.query).get("socket", [None])[0]
    out = []
    if socket:
        out.append(Path(socket).parent / "qemu" / f"{name}.pid")
    if parts.path.rstrip("/") == "/system":
        out += [Path("/run/libvirt/qemu") / f"{name}.pid", Path("/var/run/libvirt/qemu") / f"{name}.pid"]
    return out


def qemu_pid(uri: str, name: str, uuid: str) -> int | None:
    """The pid of the QEMU running ``name`` on a daemon of this machine, or None."""
    if not is_local(uri) or not uuid:
        return None
    for path in pid_files(uri, name):
        try:
            pid = int(path.read_text().strip())
            if uuid.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except (OSError, ValueError):
            continue
    return None


def read_pages(pid: int | None) -> dict[int, int] | None:
    if pid is None:
        return None
    try:
        return pages_per_node(Path(f"/proc/{pid}/numa_maps").read_text())
    except OSError:
        return None


# --- the operation ------------------------------------------------------------------------


class LibvirtRebalance(Operation):
    def __init__(self, backend: LibvirtBackend, request: RebalanceRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        if (request.to_cell is None) == (request.memory_kib is None):
            raise BadInput("say either --to-cell CELL or --memory SIZE")
        if not vm.active:
            raise BadInput(f"{vm.name} is {vm.state.value}; rebalancing changes a running VM",
                           hint="edit its definition instead, or start it first")
        conn = backend.connected(vm.host)
        host = inv.host(vm.host)
        if host is None:
            raise HostUnreachable(f"{vm.host} is not in the inventory", hint="refresh and try again")
        nodes = [n.id for n in vm.vnuma] or [0]
        if request.vnode not in nodes:
            raise NotFound(f"{vm.name} has no vNUMA cell {request.vnode}",
                           hint=f"its cells are {', '.join(map(str, nodes))}")
        try:
            xml = conn.connection.lookupByUUIDString(vm.uuid).XMLDesc(0)
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                           hint="refresh and try again") from exc
        self.backend, self.vm, self.request, self.uri = backend, vm, request, conn.uri
        self.cells = {c.id: c for c in host.numa}
        self.noop = False
        self.old_nodeset = ""
        self.old_memory_kib = vm.memory_kib
        if request.to_cell is not None:
            phase, what = self._plan_move(ET.fromstring(xml), request.to_cell)
        else:
            phase, what = self._plan_resize(ET.fromstring(xml), request.memory_kib or 0)
        super().__init__(new_job(JobKind.REBALANCE, (vm.name,), (phase,), what))

    # -- validation ----------------------------------------------------------------------

    def _plan_move(self, root: ET.Element, to_cell: int) -> tuple[str, str]:
        vm, vnode = self.vm, self.request.vnode
        if to_cell not in self.cells:
            raise BadInput(f"{vm.host} has no NUMA cell {to_cell}",
                           hint=f"its cells are {', '.join(map(str, sorted(self.cells))) or 'not reported'}")
        memory = root.find("numatune/memory")
        mode = memory.get("mode", "strict") if memory is not None else None
        self.old_nodeset = memory.get("nodeset", "") if memory is not None else ""
        memnode = next((m for m in root.findall("numatune/memnode") if m.get("cellid") == str(vnode)), None)
        source = memnode if memnode is not None else memory
        placed = parse_cpuset(source.get("nodeset", ""), strict=False) if source is not None else ()
        where = set(placed) or set(self.cells)  # no nodeset: the host may use any cell
        if where <= {to_cell}:
            self.noop = True
            return "verifying", f"check that vNUMA cell {vnode} of {vm.name} is on cell {to_cell} (nothing to move)"
        if memnode is not None:
            raise BadInput(
                f"libvirt cannot move one vNUMA cell of a running guest: {vm.name}'s cell {vnode} is placed by "
                f"<memnode cellid='{vnode}' nodeset='{memnode.get('nodeset')}'>",
                hint="change that memnode in its definition (`virsh edit`) and restart it")
        if mode != "restrictive":
            raise BadInput(
                f"libvirt moves a running guest's memory only in restrictive numatune mode; {vm.name} uses "
                f"{mode or 'no numatune (strict by default)'}",
                hint="set <numatune><memory mode='restrictive' nodeset='…'/> in its definition and restart it")
        by_cell = vm.memory_by_cell()
        moving = vm.memory_kib - (by_cell or {}).get(to_cell, 0)
        cell: NumaCell = self.cells[to_cell]
        if cell.free_kib is None or cell.free_kib < moving:
            raise BadInput(f"cell {to_cell} of {vm.host} has {format_kib(cell.free_kib)} free; "
                           f"{format_kib(moving)} of {vm.name} would move there",
                           hint="free memory on it, or pick another cell")
        whole = len(vm.vnuma) > 1
        what = (f"move {vm.name}'s memory (all {len(vm.vnuma)} vNUMA cells: libvirt places them together) "
                if whole else f"move vNUMA cell {vnode} of {vm.name} ") + f"to cell {to_cell}"
        return "moving", what

    def _plan_resize(self, root: ET.Element, kib: int) -> tuple[str, str]:
        vm = self.vm
        if len(vm.vnuma) > 1:
            raise BadInput(f"libvirt's balloon resizes the whole guest, not one vNUMA cell; {vm.name} has "
                           f"{len(vm.vnuma)}", hint="resizing one cell needs memory hotplug (DIMMs), "
                                                    "which hvc does not do")
        balloon = root.find("devices/memballoon")
        if balloon is None or balloon.get("model", "none") == "none":
            raise BadInput(f"{vm.name} has no balloon device (<memballoon model='none'>), so libvirt cannot "
                           f"change its memory while it runs",
                           hint="add <memballoon model='virtio'/> to its definition and restart it")
        limit = vm.max_memory_kib or vm.memory_kib
        if kib > limit:
            raise BadInput(f"{format_kib(kib)} is above {vm.name}'s maximum {format_kib(limit)}",
                           hint="raise its <memory> in the definition (needs a restart)")
        if kib < MIN_MEMORY_KIB:
            raise BadInput(f"{format_kib(kib)} is below the {format_kib(MIN_MEMORY_KIB)} hvc leaves a guest")
        current = root.find("currentMemory")
        cur = _kib(current) if current is not None else vm.memory_kib
        self.old_memory_kib = cur or vm.memory_kib
        if kib == self.old_memory_kib:
            self.noop = True
            return "ballooning", f"check that {vm.name} has {format_kib(kib)} (nothing to change)"
        grow = kib - self.old_memory_kib
        if grow > 0:
            cells = vm.memory_nodeset or tuple(self.cells)
            free = sum(self.cells[c].free_kib or 0 for c in cells if c in self.cells)
            if free < grow:
                raise BadInput(f"cells {','.join(map(str, cells))} of {vm.host} have {format_kib(free)} free; "
                               f"growing {vm.name} needs {format_kib(grow)}", hint="free memory there first")
        verb = "grow" if grow > 0 else "shrink"
        return "ballooning", f"{verb} {vm.name} from {format_kib(self.old_memory_kib)} to {format_kib(kib)}"

    # -- running -------------------------------------------------------------------------

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        job, vm = self.job, self.vm
        started = time.time()

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            self.backend.refresh()
            return JobResult(job.id, outcome, reason, started, time.time())

        emit(PhaseChanged(job.id, job.phases[0], job.description, at=started))
        try:
            conn = open_job_connection(self.uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {vm.host}: {libvirt_reason(exc)}; nothing changed")
        try:
            dom = conn.lookupByUUIDString(vm.uuid)
            if self.request.to_cell is not None:
                return self._move(dom, emit, cancel, result)
            return self._resize(dom, emit, cancel, result)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; nothing changed")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _move(self, dom: Any, emit: Emit, cancel: threading.Event, result: _Result) -> JobResult:
        job, vm = self.job, self.vm
        to_cell = self.request.to_cell
        assert to_cell is not None
        meter = Meter(job.id, "pages", time.time)
        pid = qemu_pid(self.uri, vm.name, vm.uuid)

        def sample(phase: str) -> tuple[int, int] | None:
            pages = read_pages(pid)
            if pages is None:
                return None
            there = pages.get(to_cell, 0)
            elsewhere = sum(n for c, n in pages.items() if c != to_cell)
            emit(meter.sample(phase, there, elsewhere, detail={f"node{c}": n for c, n in sorted(pages.items())}))
            return there, elsewhere

        if self.noop:
            counted = sample("verifying")
            if counted is None:
                return result(Outcome.SUCCEEDED, f"already on cell {to_cell} by its placement; nothing moved "
                                                 f"(pages not countable from here)")
            there, elsewhere = counted
            return result(Outcome.SUCCEEDED, f"already on cell {to_cell}: {there:,} pages there, {elsewhere:,} "
                                             f"elsewhere; nothing moved")
        if cancel.is_set():
            return result(Outcome.CANCELLED, "cancelled before anything changed")
        try:
            dom.setNumaParameters({libvirt.VIR_DOMAIN_NUMA_NODESET: str(to_cell)}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; {vm.name}'s memory stays on {self.old_nodeset}")
        if pid is None:
            return result(Outcome.SUCCEEDED, f"nodeset set to {to_cell}; the kernel migrates the pages "
                                             f"(not countable from here)")
        deadline = time.monotonic() + MOVE_TIMEOUT_S
        last, still_since = None, time.monotonic()
        while time.monotonic() < deadline:
            if cancel.is_set():
                try:
                    dom.setNumaParameters({libvirt.VIR_DOMAIN_NUMA_NODESET: self.old_nodeset},
                                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    back = f"placement restored to {self.old_nodeset}"
                except libvirt.libvirtError as exc:
                    back = f"restoring placement {self.old_nodeset} failed: {libvirt_reason(exc)}"
                return result(Outcome.CANCELLED, f"cancelled; {back}")
            counted = sample("moving")
            if counted is None or counted[1] == 0:
                break
            if counted != last:
                last, still_since = counted, time.monotonic()
            elif time.monotonic() - still_since > SETTLE_S:
                break
            cancel.wait(SAMPLE_S)
        pages = read_pages(pid) or {}
        left = sum(n for c, n in pages.items() if c != to_cell)
        note = f"; {left:,} pages stayed elsewhere (the kernel could not move them)" if left else ""
        return result(Outcome.SUCCEEDED, f"memory on cell {to_cell}: {pages.get(to_cell, 0):,} pages{note}")

    def _resize(self, dom: Any, emit: Emit, cancel: threading.Event, result: _Result) -> JobResult:
        job, vm = self.job, self.vm
        target = self.request.memory_kib or 0
        meter = Meter(job.id, "pages", time.time)
        start = _actual(dom) or self.old_memory_kib
        if self.noop:
            return result(Outcome.SUCCEEDED, f"{vm.name} already has {format_kib(target)} as its balloon target "
                                             f"(the guest reports {format_kib(start)}); nothing changed")
        if cancel.is_set():
            return result(Outcome.CANCELLED, "cancelled before anything changed")
        try:
            dom.setMemoryFlags(target, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; {vm.name} keeps {format_kib(self.old_memory_kib)}")
        deadline = time.monotonic() + BALLOON_TIMEOUT_S
        actual = start
        while True:
            actual = _actual(dom) or actual
            emit(meter.sample("ballooning", abs(actual - start) // PAGE_KIB, abs(target - actual) // PAGE_KIB,
                              detail={"actual_kib": actual, "target_kib": target}))
            if abs(actual - target) <= BALLOON_SLACK_KIB:
                return result(Outcome.SUCCEEDED, f"{vm.name} has {format_kib(actual)}")
            if cancel.is_set() or time.monotonic() > deadline:
                break
            cancel.wait(SAMPLE_S)
        try:
            dom.setMemoryFlags(self.old_memory_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            back = f"target restored to {format_kib(self.old_memory_kib)}"
        except libvirt.libvirtError as exc:
            back = f"restoring the target {format_kib(self.old_memory_kib)} failed: {libvirt_reason(exc)}"
        if cancel.is_set():
            return result(Outcome.CANCELLED, f"cancelled at {format_kib(actual)}; {back}")
        return result(Outcome.FAILED, f"the guest did not follow the balloon: it reports {format_kib(actual)} "
                                      f"after {BALLOON_TIMEOUT_S:.0f}s, not {format_kib(target)} (does it run a "
                                      f"virtio-balloon driver?); {back}")


def _actual(dom: Any) -> int | None:
    """The guest's current memory in KiB as the balloon reports it."""
    try:
        stats = dom.memoryStats()
        if stats.get("actual"):
            return int(stats["actual"])
        return int(dom.info()[2])
    except libvirt.libvirtError:
        return None


def _kib(el: ET.Element) -> int | None:
    """``<currentMemory unit='KiB'>`` as libvirt writes it in a live XML; None for anything else."""
    if el.get("unit", "KiB") != "KiB":
        return None
    try:
        return int((el.text or "").strip())
    except ValueError:
        return None
