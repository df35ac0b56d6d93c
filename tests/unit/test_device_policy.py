"""S7: the device policy authority, its policy files, and device operations on the simulator."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import BadInput, HvcError
from backends.models import Outcome, Owner, OwnerKind, PciDevice
from backends.policy import OPS, Verdict, load_authority, parse_policy
from backends.policy.authority import PolicyError, shipped_policies
from backends.policy.device_op import PolicyDenied
from backends.requests import DeviceOpRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet


def dev(device_class: str, **kw: object) -> PciDevice:
    base = PciDevice("0000:3b:00.0", "hv1", "v", "p", device_class, "vfio-pci", 7, Owner(OwnerKind.VFIO))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_every_device_class_gets_its_policy() -> None:
    a = load_authority()
    assert {p.name for p in shipped_policies()} == {"default", "gpu", "network", "storage", "usb"}
    cases = {"0x030000": "gpu", "3D controller": "gpu", "0x020000": "network", "Ethernet controller": "network",
             "0x010802": "storage", "Non-Volatile memory controller": "storage", "0x0c0330": "usb",
             "0x0c0500": "default", "Audio device": "default", None: "default"}
    for cls, policy in cases.items():
        assert a.policy_for(dev(cls)).name == policy, cls  # type: ignore[arg-type]


def test_local_operations_are_permitted_system_wide_ones_denied_or_translated() -> None:
    a = load_authority()
    gpu = dev("0x030000")
    flr, bus, rom = (a.decide(gpu, op) for op in ("flr", "bus-reset", "rom-write"))
    assert (flr.verdict, flr.run, flr.scope) == (Verdict.PERMIT, "flr", "local")
    assert (bus.verdict, bus.run, bus.scope) == (Verdict.TRANSLATE, "flr", "system")
    assert (rom.verdict, rom.run) == (Verdict.DENY, None) and "firmware" in rom.reason
    assert a.decide(gpu, "frobnicate").verdict is Verdict.DENY
    assert [d.op for d in a.table(gpu)] == list(OPS)


def test_a_physical_function_reset_is_system_wide_because_it_takes_its_vfs_down() -> None:
    a = load_authority()
    pf = dev("0x020000", vfs=("0000:3b:10.0",))
    vf = dev("0x020000", address="0000:3b:10.0", physfn="0000:3b:00.0")
    assert a.decide(pf, "flr").verdict is Verdict.DENY and "VFs" in a.decide(pf, "flr").reason
    assert a.decide(pf, "bus-reset").verdict is Verdict.DENY  # its translation (flr) is not local either
    assert a.decide(vf, "flr").verdict is Verdict.PERMIT
    assert a.decide(vf, "bus-reset").run == "flr"
    assert a.decide(vf, "power-state").verdict is Verdict.DENY


def test_a_user_policy_replaces_the_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "gpu.toml").write_text('name = "gpu"\nclasses = ["0x03"]\n[ops.flr]\nscope = "system"\n'
                                       'reason = "our GPUs hang on FLR"\n')
    a = load_authority(tmp_path)
    decision = a.decide(dev("0x030000"), "flr")
    assert decision.verdict is Verdict.DENY and decision.reason == "our GPUs hang on FLR"
    assert a.decide(dev("0x030000"), "power-state").verdict is Verdict.DENY  # not listed: denied
    assert a.decide(dev("0x020000"), "flr").verdict is Verdict.PERMIT  # other policies unchanged


@pytest.mark.parametrize(("text", "message"), [
    ("name = ", "not valid TOML"),
    ('name = "x"\n', "no [ops]"),
    ('name = "x"\n[ops.flr]\nscope = "global"\n', "scope must be 'local' or 'system'"),
    ('name = "x"\n[ops.reboot]\nscope = "local"\n', "unknown operation 'reboot'"),
    ('name = "x"\n[ops.bus-reset]\nscope = "system"\ntranslate = "bus-reset"\n', "translate must name another"),
    ('name = "x"\ncolour = 1\n[ops.flr]\nscope = "local"\n', "unknown key 'colour'"),
    ('classes = "0x03"\nname = "x"\n[ops.flr]\nscope = "local"\n', "'classes' must be a list"),
])
def test_a_bad_policy_is_one_line_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "my.toml")
    line = caught.value.one_line()
    assert line.startswith("my.toml") and message in line and "\n" not in line.split(";")[0]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.builds(lambda a, b: f"name = \"p\"\n[ops.{a}]\nscope = {b}\n",
                                      st.sampled_from([*OPS, "x", ""]), st.text(max_size=12))))
def test_any_text_is_a_policy_or_bad_input(text: str) -> None:
    try:
        policy = parse_policy(text, "fuzz.toml")
    except BadInput as exc:
        assert exc.one_line().startswith("fuzz.toml")
    else:
        assert policy.ops and all(r.scope in ("local", "system") for r in policy.ops.values())


def sim() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


def run(backend: SimBackend, request: DeviceOpRequest) -> tuple[Outcome, list[object]]:
    events: list[object] = []
    result = backend.prepare(request).run(events.append, threading.Event())
    return result.outcome, events


def test_sim_flr_resets_the_device_and_ends_its_dma() -> None:
    backend = sim()
    backend.clock.advance(10)
    backend.refresh()
    guest = backend.residency.guests["ml-train-01"]
    gpu = "0000:17:00.0"
    ended = sum(t.tag == gpu for t in guest.tracker.transfers())
    assert ended > 0, "the seeded traffic has transfers from the GPU in flight"
    op = backend.prepare(DeviceOpRequest(gpu, "bus-reset", host="fra-gpu01"))
    assert "translated to flr" in op.job.description and op.job.phases == ("flr",)
    assert op.run(lambda _e: None, threading.Event()).outcome is Outcome.SUCCEEDED
    state = backend.device_state[("fra-gpu01", gpu)]
    assert (state.power, state.resets, state.last) == ("D0", 1, "flr")
    assert not any(t.tag == gpu for t in guest.tracker.transfers())


def test_sim_power_state_is_recorded_and_a_denial_changes_nothing() -> None:
    backend = sim()
    outcome, _ = run(backend, DeviceOpRequest("0000:3b:00.0", "power-state", host="fra-hv01"))
    assert outcome is Outcome.SUCCEEDED and backend.device_state[("fra-hv01", "0000:3b:00.0")].power == "D3hot"
    with pytest.raises(PolicyDenied) as caught:
        backend.prepare(DeviceOpRequest("0000:18:00.0", "flr", host="fra-hv02"))
    assert "takes all its VFs" in str(caught.value) and "fra-hv02" in str(caught.value)
    assert ("fra-hv02", "0000:18:00.0") not in backend.device_state
    with pytest.raises(BadInput, match="exists on"):
        backend.prepare(DeviceOpRequest("0000:18:00.0", "flr"))


def test_read_only_refuses_device_operations() -> None:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=True)
    with pytest.raises(HvcError, match="read-only"):
        backend.prepare(DeviceOpRequest("0000:3b:00.0", "flr", host="fra-hv01"))
