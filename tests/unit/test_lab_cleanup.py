"""Removing the lab goes on past a host that cannot list its guests: the daemons must still stop."""

from __future__ import annotations

import libvirt

from backends.libvirt.lab.guests import remove_lab_objects


class _Unlistable:
    """A host whose daemon refuses to list (as libvirtd does past 16,384 domains)."""

    closed = False

    def listAllDomains(self, _flags: int) -> list[object]:
        raise libvirt.libvirtError("internal error: Too many domains '306824' for limit '16384'")

    def storagePoolLookupByName(self, _name: str) -> object:
        raise libvirt.libvirtError("no pool")

    def close(self) -> None:
        self.closed = True


def test_a_host_that_cannot_list_its_guests_is_reported_and_still_closed() -> None:
    host = _Unlistable()
    problems: list[str] = []
    remove_lab_objects({"b": host}, lambda _step: None, problems)  # type: ignore[dict-item]
    assert host.closed
    assert len(problems) == 1 and problems[0].startswith("host B: cannot list its guests:")
