"""A migration's progress from libvirt: job statistics and events turned into phases and samples."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit
from backends.models import PhaseChanged
from backends.progress import Meter
from backends.units import format_bytes

if TYPE_CHECKING:
    from backends.libvirt.host import DomainEvent
    from backends.libvirt.migrate import LibvirtMigrate


class MigrationProgress:
    """Phase and progress bookkeeping for one migration run."""

    def __init__(self, op: LibvirtMigrate, emit: Emit) -> None:
        self.op, self.emit = op, emit
        self.meter = Meter(op.job.id, "bytes", time.time)
        self.current = ""
        self.iteration = 0
        self.samples = 0
        self.last: Mapping[str, Any] = {}

    def phase(self, name: str, message: str) -> None:
        self.current = name
        self.emit(PhaseChanged(self.op.job.id, name, message, at=time.time()))

    def event(self, event: DomainEvent) -> None:
        op = self.op
        if event.kind == "migration_iteration" and event.uri == op.src.uri and event.args:
            self.iteration = max(self.iteration, int(event.args[0]))
            if self.current == "setup":
                self.phase("precopy", f"copying {op.vm.name}'s memory while it runs")
        elif event.kind == "lifecycle" and len(event.args) >= 2:
            kind, detail = int(event.args[0]), int(event.args[1])
            if event.uri == op.src.uri and kind == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED and self.current in ("setup", "precopy"):
                    left = self.last.get("memory_remaining")
                    what = f"the last {format_bytes(int(left))}" if isinstance(left, int) else "the rest"
                    self.phase("switchover", f"{op.vm.name} paused on {op.vm.host}; copying {what} "
                                             f"and its device state")
            elif (event.uri == op.dst.uri and kind == libvirt.VIR_DOMAIN_EVENT_RESUMED
                  and detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED and self.current != "done"):
                self.phase("done", f"{op.vm.name} runs on {op.dest_name}; {op.vm.host} is releasing its copy")

    def sample(self, stats: Mapping[str, Any] | None) -> None:
        if not stats or not stats.get("memory_total"):
            return  # no job yet, or still in setup: nothing has been copied
        self.last = stats
        self.iteration = max(self.iteration, int(stats.get("memory_iteration") or 0))
        if self.current == "setup":
            self.phase("precopy", f"copying {self.op.vm.name}'s memory while it runs")
        if self.current not in ("precopy", "postcopy"):
            return
        self.samples += 1
        self.emit(self.meter.sample(self.current, int(stats.get("memory_processed") or 0),
                                    int(stats.get("memory_remaining") or 0), detail=_detail(stats, self.iteration)))

    def finish(self, dest_dom: Any) -> str:
        """The migration returned: a last sample from the completed job; returns a summary."""
        op = self.op
        completed = None
        if dest_dom is not None:
            try:
                completed = dest_dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            except libvirt.libvirtError:
                completed = None
        stats = completed or self.last
        bits: list[str] = []
        if stats and stats.get("memory_total"):
            self.iteration = max(self.iteration, int(stats.get("memory_iteration") or 0))
            detail = _detail(stats, self.iteration, completed=completed is not None)
            self.emit(self.meter.sample("postcopy" if self.current == "postcopy" else "precopy",
                                        int(stats.get("memory_processed") or 0), 0, detail=detail))
            self.samples += 1
            bits += [f"{self.iteration} round{'s' if self.iteration != 1 else ''}",
                     f"{format_bytes(int(stats.get('memory_processed') or 0))} sent"]
        if completed and completed.get("downtime") is not None:
            bits.append(f"downtime {int(completed['downtime'])} ms")
        if completed and completed.get("time_elapsed") is not None:
            bits.append(f"libvirt job {int(completed['time_elapsed'])} ms")
        summary = f"{op.vm.name} runs on {op.dest_name}" + (f" ({', '.join(bits)})" if bits else "")
        if self.current in ("setup", "precopy"):
            self.phase("switchover", f"{op.vm.name} paused on {op.vm.host} for the last pages")
        if self.current != "done":
            self.phase("done", summary)
        return summary


def _detail(stats: Mapping[str, Any], iteration: int, completed: bool = False) -> dict[str, float | int | str]:
    page = int(stats.get("memory_page_size") or 4096)
    dirty_pages = int(stats.get("memory_dirty_rate") or 0)
    detail: dict[str, float | int | str] = {
        "iteration": iteration,
        "dirty_rate": dirty_pages * page,  # bytes/s, the unit of the progress (describe() shows it so)
        "dirty_pages_per_s": dirty_pages,
        "memory_total": int(stats.get("memory_total") or 0),
    }
    downtime = stats.get("downtime")
    if downtime is not None:
        detail["downtime_ms" if completed else "expected_downtime_ms"] = int(downtime)
    if stats.get("time_remaining") is not None:
        detail["time_remaining_ms"] = int(stats["time_remaining"])
    if stats.get("auto_converge_throttle"):
        detail["throttle_percent"] = int(stats["auto_converge_throttle"])
    if stats.get("memory_postcopy_requests"):
        detail["postcopy_requests"] = int(stats["memory_postcopy_requests"])
    return detail


def job_stats(dom: Any) -> dict[str, Any] | None:
    try:
        stats = dom.jobStats()
    except libvirt.libvirtError:
        return None  # the job just ended, or the domain left this host
    return stats if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE else None
