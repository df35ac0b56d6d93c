"""The fleet file: the shipped demo loads, and every mistake is named in one line."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import FleetFileError
from backends.models import SiteRole
from backends.sim.fleet import demo_fleet_path, load_fleet, parse_fleet

MINIMAL = """
[[sites]]
name = "p"
[[sites]]
name = "r"
role = "recovery"
[[hosts]]
name = "h1"
site = "p"
cells = [{ cpus = 4, memory = "16G" }, { cpus = 4, memory = "16G" }]
[[hosts]]
name = "h2"
site = "r"
cells = [{ cpus = 4, memory = "16G" }]
[[vms]]
name = "v1"
host = "h1"
vcpus = 2
memory = "2G"
disks = [{ target = "vda", size = "10G" }]
"""


def test_demo_fleet_has_what_the_demo_needs() -> None:
    spec = load_fleet(demo_fleet_path())
    assert {s.role for s in spec.sites} == {SiteRole.PRIMARY, SiteRole.RECOVERY}
    primary = [h for h in spec.hosts if h.site == "fra"]
    recovery = [h for h in spec.hosts if h.site == "dub"]
    assert len(primary) >= 4 and len(recovery) >= 2
    assert all(2 <= len(h.cells) <= 4 for h in spec.hosts)
    assert len({(len(h.cells), h.cells[0].cpus, h.cells[0].memory_kib) for h in spec.hosts}) > 2
    assert len(spec.vms) >= 24
    assert sum(1 for v in spec.vms if len(v.vnuma) > 1) >= 3
    assert any(len(n.cells) > 1 for v in spec.vms for n in v.vnuma)  # a split vNUMA cell
    assert sum(1 for v in spec.vms if v.pinned) >= 3
    assert any(d.vfs == 8 for d in spec.devices)
    assert any(d.owner not in ("host", "vfio") for d in spec.devices)
    assert all(1 <= d.overlays + 1 <= 5 for v in spec.vms for d in v.disks)
    assert sum(1 for v in spec.vms if v.replica) >= 4
    assert any(v.replica and v.replica.lag_s > v.replica.rpo_s for v in spec.vms)


def test_minimal_fleet_loads() -> None:
    spec = parse_fleet(MINIMAL, "f.toml")
    assert [h.name for h in spec.hosts] == ["h1", "h2"]
    assert spec.vms[0].memory_kib == 2 << 20


@pytest.mark.parametrize(("change", "message"), [
    (("[[sites]]\nname = \"p\"", "[[sites]]\nname = \"p\"\nflavour = 1"),
     "f.toml: sites[0] 'p': unknown key 'flavour'"),
    (('site = "r"', 'site = "mars"'), "hosts[1] 'h2': site 'mars' is not one of the [[sites]]"),
    (('host = "h1"', 'host = "h9"'), "vms[0] 'v1': host 'h9' is not one of the [[hosts]]"),
    (("vcpus = 2", "vcpus = 0"), "vms[0] 'v1': 'vcpus' must be positive, not 0"),
    (("vcpus = 2", 'vcpus = "two"'), "vms[0] 'v1': 'vcpus' must be int, not str"),
    (('memory = "2G"', 'memory = "lots"'), "vms[0] 'v1': 'memory': size 'lots' is not a size"),
    (('memory = "2G"', 'memory = "2G"\ncell = 5'), "vms[0] 'v1': cell 5 is not a cell of 'h1' (0-1)"),
    (('memory = "2G"', 'memory = "2G"\nvnuma = [{ vcpus = 1, memory = "1G", cells = [0] }]'),
     "vms[0] 'v1': vnuma vcpus add up to 1, not vcpus = 2"),
    (('memory = "2G"', 'memory = "2G"\nvnuma = [{ vcpus = 2, memory = "2G", cells = [3] }]'),
     "vms[0] 'v1' vnuma[0]: cells [3] must name cells of 'h1' (0-1)"),
    (('memory = "2G"', 'memory = "2G"\nreplica = { to = "h1" }'),
     "vms[0] 'v1' replica: replicates to 'h1' at its own site 'p'"),
    (('cells = [{ cpus = 4, memory = "16G" }]', "cells = []"), "hosts[1] 'h2': has no cells"),
    (('cells = [{ cpus = 4, memory = "16G" }]', 'cells = [{ cpus = 3, memory = "16G" }]'),
     "hosts[1] 'h2': every cell's cpus must be a multiple of smt (2)"),
    (('name = "h2"', 'name = "h1"'), "host 'h1' is defined twice"),
    (("vcpus = 2", "vcpus = 2\nvcpus = 3"), "f.toml: not valid TOML"),
])
def test_fleet_errors_name_the_entry_and_the_problem(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in MINIMAL
    with pytest.raises(FleetFileError) as err:
        parse_fleet(MINIMAL.replace(old, new, 1), "f.toml")
    text = err.value.one_line()
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("device", "message"), [
    ('address = "3b:00.0"', "is not a PCI address"),
    ('address = "0000:3b:00.0"\nowner = "nobody"', "owner 'nobody' must be 'host', 'vfio' or the name of a VM"),
    ('address = "0000:3b:00.0"\nvfs = 2\nvf_owners = { "5" = "v1" }', "vf_owners key '5' is not a VF index below 2"),
])
def test_device_errors(device: str, message: str) -> None:
    text = MINIMAL + f"""
[[devices]]
host = "h1"
{device}
vendor = "V"
product = "P"
class = "C"
driver = "d"
iommu_group = 1
"""
    with pytest.raises(FleetFileError, match=message):
        parse_fleet(text, "f.toml")


def test_device_owned_by_a_vm_on_another_host_is_refused() -> None:
    text = MINIMAL.replace("[[vms]]", "[[vms]]\nname = \"v2\"\nhost = \"h2\"\nvcpus = 1\nmemory = \"1G\"\n[[vms]]", 1)
    text += '[[devices]]\nhost = "h1"\naddress = "0000:3b:00.0"\nvendor = "V"\nproduct = "P"\n'
    text += 'class = "C"\ndriver = "d"\niommu_group = 1\nowner = "v2"\n'
    with pytest.raises(FleetFileError, match="owner 'v2' runs on 'h2', not on 'h1'"):
        parse_fleet(text, "f.toml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match="does not exist"):
        load_fleet(tmp_path / "nope.toml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_either_loads_or_fails_with_a_fleet_error(text: str) -> None:
    try:
        parse_fleet(text)
    except FleetFileError as exc:
        assert exc.one_line() and "\n" not in exc.one_line().strip()


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70) | st.text(max_size=6) | st.sampled_from(["2G", "h1", "p"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["name", "cpus", "memory", "cells", "vcpus", "host", "site"]), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["sites", "hosts", "vms", "devices"]), st.integers(0, 1),
       st.sampled_from(["name", "site", "cells", "vcpus", "memory", "host", "vnuma", "disks",
                        "replica", "cpus", "address", "owner", "vfs", "distances", "state"]), _values)
def test_structurally_mutated_fleets_fail_cleanly(section: str, index: int, key: str, value: object) -> None:
    import tomllib

    doc = tomllib.loads(MINIMAL)
    entries = doc.setdefault(section, [])
    if index < len(entries):
        entries[index][key] = value
    else:
        entries.append({key: value})
    loader_input = _to_toml(doc)
    with contextlib.suppress(FleetFileError):
        parse_fleet(loader_input)


def _to_toml(doc: dict[str, object]) -> str:
    """A tiny TOML writer for the fuzz test (inline tables and arrays only)."""
    def value(v: object) -> str:
        if v is None:
            return '""'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode() + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        raise TypeError(v)

    lines = []
    for section, entries in doc.items():
        for entry in entries:  # type: ignore[attr-defined]
            lines.append(f"[[{section}]]")
            lines.extend(f'"{k}" = {value(v)}' for k, v in entry.items())
    return "\n".join(lines)
