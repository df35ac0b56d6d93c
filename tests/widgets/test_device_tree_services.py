"""S8 in the device tree: a VF carrying a storage service's identifier says so; others do not."""

from __future__ import annotations

from backends.models import StorageService
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from widgets.device_tree import build_specs


def _labels(specs: list, out: dict[tuple[str, ...], str]) -> dict[tuple[str, ...], str]:  # type: ignore[type-arg]
    for spec in specs:
        out[spec.key] = spec.label.plain
        _labels(spec.children, out)
    return out


def test_the_vf_carrying_an_identifier_shows_it_and_the_service() -> None:
    inv = SimBackend(load_fleet(demo_fleet_path())).snapshot()
    labels = _labels(build_specs(inv.devices, {}, inv.services), {})
    assert labels[("dev", "fra-hv02", "0000:18:01.3")].endswith("⇄ 02:5e:10:00:00:01 iscsi-tier1")
    assert labels[("dev", "fra-hv01", "0000:18:01.7")].endswith("⇄ 02:5e:10:00:00:02 nvme-pool-a")
    carrying = [key for key, text in labels.items() if "⇄" in text]
    assert len(carrying) == 2  # only those two VFs; the PFs keep their VF summary
    moving = StorageService("x", "storage-svc-01", "fra-hv02", "02:00:00:00:00:09", None)
    assert not any("02:00:00:00:00:09" in t for t in _labels(build_specs(inv.devices, {}, [moving]), {}).values())
