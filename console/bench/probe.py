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


async def measure(scale: str, idle_s: float, samples: int, start_only: bool = False) -> dict[str, Any]:
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
    awaited: list[tuple[Any, asyncio.Future[float]]] = []  # (what a frame must show, its time)
    display = app._display

    def counted_display(screen: Any, renderable: Any) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
            cpu_at[frames[-1]] = time.process_time()
            for test, when in awaited:
                if not when.done() and test():
                    when.set_result(frames[-1])
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

    async def first_frame_showing(test: Any, timeout: float = 120.0) -> float:
        """When the first frame was drawn with ``test()`` true: the view it waits for is in it."""
        when = asyncio.get_running_loop().create_future()
        awaited.append((test, when))
        try:
            return await asyncio.wait_for(when, timeout)
        except TimeoutError:
            raise TimeoutError("view never filled") from None

    async def idle_cpu(seconds: float) -> float:
        """This process's CPU over ``seconds`` of doing nothing but refresh, in % of a core."""
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)

    def filled() -> bool:
        tables = list(app.screen.query(DataTable))
        return bool(tables) and all(t.row_count > 0 for t in tables)

    async with app.run_test(size=(120, 40)) as pilot:
        first = await first_frame_showing(filled)
        out["start_to_frame_s"] = first - STARTED
        out["start_cpu_s"] = cpu_at[first] - STARTED_CPU  # the same span in CPU time: steadier on a shared machine
        if start_only:
            return out
        import psutil

        from backends.requests import MigrateRequest

        def vms_shown() -> bool:
            from widgets.vm_table import VmTable  # the console imports it with the VMs view

            tables = app.screen.query(VmTable)
            return bool(tables) and tables.first().row_count == out["vms"]

        pressed = time.perf_counter()
        shown = asyncio.ensure_future(first_frame_showing(vms_shown))
        await pilot.press("2")
        out["vms_view_s"] = await shown - pressed
        await pilot.pause(0.5)
        out["rss_mb"] = psutil.Process().memory_info().rss / 2**20

        out["idle_cpu_pct"] = await idle_cpu(idle_s)

        # The Replication view: every replica's lag moves at each refresh.
        replicas = len(backend.snapshot().replicas)  # a small fleet may have none

        def replicas_shown() -> bool:
            tables = app.screen.query("#replicas")
            return bool(tables) and tables.first(DataTable).row_count == replicas

        async def switch(key: str, shown: Any) -> None:
            drawn = asyncio.ensure_future(first_frame_showing(shown))  # before the key: its frame may come at once
            await pilot.press(key)
            await drawn

        await switch("4", replicas_shown)
        await pilot.pause(0.5)
        out["replicas"] = replicas
        out["replication_idle_cpu_pct"] = await idle_cpu(idle_s)
        await switch("2", vms_shown)

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
    """``SCALE IDLE_S SAMPLES``: every figure; ``SCALE start``: the start only."""
    if sys.argv[2:] == ["start"]:
        print(json.dumps(asyncio.run(measure(sys.argv[1], 0, 0, start_only=True))))
        return
    scale, idle_s, samples = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(measure(scale, idle_s, samples))))


if __name__ == "__main__":
    main()
