"""The console's own figures, measured in this process on the real app, headless (run by the suite
as ``python -m console.bench.probe``; prints one JSON line).

A frame is the compositor producing an update for the terminal: ``App._display`` is called with it
(headless, nothing is written). Timings therefore include Textual's frame pacing.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the console, Textual or the fleet are imported
STARTED_CPU = time.process_time()

import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


async def measure(scale: str, idle_s: float, samples: int) -> dict[str, Any]:
    # Only what the console's start imports itself, so that start_to_frame_s counts no more; and as
    # the command line does (console/cli.py: _console), no garbage collection up to the first frame.
    from backends.gcpause import hold

    started = hold()
    from textual.widgets import DataTable

    from backends.open import open_backend
    from backends.sim.clock import ScaledClock
    from console.app import HvcApp

    backend = open_backend(scale=scale, clock=ScaledClock(1.0))
    app = HvcApp(backend, started=started)  # the default refresh interval
    frames: list[float] = []
    cpu_at: dict[float, float] = {}  # frame → this process's CPU time then
    display = app._display

    def counted_display(screen: Any, renderable: Any) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
            cpu_at[frames[-1]] = time.process_time()
        display(screen, renderable)

    app._display = counted_display  # type: ignore[method-assign]
    out: dict[str, Any] = {"vms": len(backend.snapshot().vms), "hosts": len(backend.snapshot().hosts)}

    async def frame_after(t: float, timeout: float = 60.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            later = [f for f in frames if f >= t]
            if later:
                return later[0]
            await asyncio.sleep(0.0005)
        raise TimeoutError("no frame")

    async def until(test: Any, timeout: float = 120.0) -> float:
        deadline = time.perf_counter() + timeout
        while not test():
            if time.perf_counter() > deadline:
                raise TimeoutError("view never filled")
            await asyncio.sleep(0.0005)
        return time.perf_counter()

    def filled() -> bool:
        tables = list(app.screen.query(DataTable))
        return bool(tables) and all(t.row_count > 0 for t in tables)

    async with app.run_test(size=(120, 40)) as pilot:
        ready = await until(filled)
        first = await frame_after(ready)
        out["start_to_frame_s"] = first - STARTED
        out["start_cpu_s"] = cpu_at[first] - STARTED_CPU  # the same span in CPU time: steadier on a shared machine
        import psutil

        from backends.requests import MigrateRequest

        pressed = time.perf_counter()
        await pilot.press("2")
        from widgets.vm_table import VmTable  # the console imports it with the VMs view, on this key

        ready = await until(lambda: app.screen.query(VmTable) and app.screen.query_one(VmTable).row_count
                            == out["vms"])
        out["vms_view_s"] = await frame_after(ready) - pressed
        await pilot.pause(0.5)
        out["rss_mb"] = psutil.Process().memory_info().rss / 2**20

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle_s)
        out["idle_cpu_pct"] = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)

        progress = 0

        def listen(_job: Any, _event: Any) -> None:
            nonlocal progress
            progress += 1

        app.jobs.listen(listen)

        pair: list[str] = []  # vm, its host, the host it goes to: found once, then it goes back and forth

        def migrate() -> None:
            from backends.errors import HvcError

            inv = backend.snapshot()
            if pair:
                pair[1], pair[2] = pair[2], pair[1]
                app.operate(MigrateRequest(pair[0], pair[2]))
                return
            for vm in [v for v in inv.vms if v.active][:50]:
                for host in [h.name for h in inv.hosts if h.name != vm.host][:5]:
                    try:
                        backend.prepare(MigrateRequest(vm.name, host))
                    except HvcError:
                        continue
                    pair.extend((vm.name, vm.host, host))
                    app.operate(MigrateRequest(vm.name, host))
                    return
            raise RuntimeError("no VM can migrate")

        migrate()
        latencies: list[float] = []
        for i in range(samples):
            if not app.jobs.running() and not app.preparing:
                migrate()
            await asyncio.sleep(0.02 + 0.03 * (i % 3) / 2)  # key presses at a person's pace
            pressed = time.perf_counter()
            await pilot.press("j" if i % 2 == 0 else "k")
            latencies.append(await frame_after(pressed) - pressed)
        out["key_p50_ms"] = 1000 * statistics.median(latencies)
        out["key_p99_ms"] = 1000 * _percentile(latencies, 0.99)
        out["key_samples"] = len(latencies)
        out["progress_events"] = progress
        for record in app.jobs.running():
            record.cancel.set()
    backend.close()
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    scale, idle_s, samples = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(measure(scale, idle_s, samples))))


if __name__ == "__main__":
    main()
