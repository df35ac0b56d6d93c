"""Operations from the console: pick a target, confirm, watch the job, cancel."""

from __future__ import annotations

from textual.widgets import OptionList, Static

from console.screens.jobs import JobsScreen
from console.screens.picker import PickerScreen
from tests.console.conftest import demo_app, highlight, pick_and_confirm
from tests.text import plain
from widgets.job_table import JobTable


async def test_migrate_from_the_vms_view_with_a_host_picker() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"web-01", "enter", "M")
        assert isinstance(app.screen, PickerScreen)
        options = app.screen.query_one(OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert not any(label.startswith("fra-hv01") for label in labels)  # not its own host
        record = await pick_and_confirm(app, pilot, "dub-hv01")
        assert app.backend.snapshot().vm("web-01").host == "dub-hv01"  # type: ignore[union-attr]
        await pilot.press("5")
        assert isinstance(app.screen, JobsScreen)
        table = app.screen.query_one(JobTable)
        assert table.current_key == record.job.id
        assert "succeeded" in plain(app.screen.query_one("#job-head", Static))
        await pilot.press("x")
        assert "already finished" in plain(app.screen.query_one("#status", Static))


async def test_hosts_that_cannot_take_the_vm_are_shown_disabled_with_the_reason() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"ml-train-01", "enter", "M")
        options = app.screen.query_one(OptionList)
        disabled = [options.get_option_at_index(i) for i in range(options.option_count)
                    if options.get_option_at_index(i).disabled]
        assert any(o.id == "dub-hv02" and "no NUMA cell with 128G free" in str(o.prompt) for o in disabled)
        await pilot.press("escape")
        assert not app.jobs.all()


async def test_rebalance_remote_memory_from_the_vms_view() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"analytics-01", "enter", "N")
        assert isinstance(app.screen, PickerScreen)
        assert app.screen.query_one(OptionList).get_option_at_index(0).id == "0:0"  # the one that works first
        await pilot.press("enter", "y")
        (record,) = app.jobs.all()
        assert record.done.wait(10) and record.result and record.result.outcome.value == "succeeded"
        assert app.backend.snapshot().vm("analytics-01").memory_nodeset == (0,)  # type: ignore[union-attr]


async def test_sync_and_test_failover_from_the_replication_view() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")  # web-02, the lagging one, is listed first
        await pilot.press("s")
        (sync,) = app.jobs.all()
        assert sync.done.wait(10) and sync.result and sync.result.outcome.value == "succeeded"
        await pilot.pause(0.2)
        web02 = next(r for r in app.backend.snapshot().replicas if r.vm == "web-02")
        assert not web02.rpo_violated and all(s.value == "present" for s in web02.layer_states)
        await pilot.press("t")
        failover = app.jobs.all()[-1]
        assert failover.done.wait(10)
        assert app.backend.snapshot().vm("web-02-testfo") is not None


async def test_migrate_a_vm_off_a_host_from_its_numa_view() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter", "M")  # fra-hv01's NUMA map, then: which VM?
        assert isinstance(app.screen, PickerScreen)
        options = app.screen.query_one(OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert "web-01" in ids and "cache-01" not in ids  # only running VMs can move live
        await highlight(app, pilot, "web-01")
        await pilot.press("enter")
        assert isinstance(app.screen, PickerScreen)  # now: where to?
        await pilot.press("enter", "y")
        (record,) = app.jobs.all()
        assert record.done.wait(10) and record.result and record.result.outcome.value == "succeeded"
        assert app.backend.snapshot().vm("web-01").host != "fra-hv01"  # type: ignore[union-attr]
