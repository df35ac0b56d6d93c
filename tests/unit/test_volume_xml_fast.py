"""parse_volume reads libvirt's volume XML with two searches; it must agree with the full parse."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from backends.libvirt.parse import parse_volume
from backends.libvirt.testfleet import write_test_fleet


def _full(xml: str) -> tuple[str | None, str | None]:
    root = ET.fromstring(xml)
    fmt = root.find("target/format")
    path = root.find("backingStore/path")
    backing = (path.text or "").strip() or None if path is not None else None
    return (fmt.get("type") if fmt is not None else None), backing


def test_agrees_with_the_full_parse_on_every_volume_of_a_fleet(tmp_path: Path) -> None:
    conn = libvirt.open(f"test://{write_test_fleet(tmp_path / 'fleet.xml', 40)}")
    try:
        xmls = [v.XMLDesc(0) for p in conn.listAllStoragePools(0) for v in p.listAllVolumes(0)]
    finally:
        conn.close()
    assert len(xmls) > 40 and any("<backingStore>" in x for x in xmls) and any("<backingStore/>" not in x for x in xmls)
    for xml in xmls:
        assert parse_volume(xml) == _full(xml), xml


@pytest.mark.parametrize("xml, want", [
    ("<volume><target><path>/p</path><format type='raw'/></target></volume>", ("raw", None)),
    ("<volume><target><path>/p</path></target></volume>", (None, None)),
    ("<volume><target><format type='qcow2'/></target><backingStore><path>/b &amp; c</path>"
     "<format type='raw'/></backingStore></volume>", ("qcow2", "/b & c")),  # an entity: the full parse
    ('<volume><target><format type="qcow2"/></target></volume>', ("qcow2", None)),  # other quotes: full parse
    ("<volume><backingStore><path>/b</path></backingStore><target><format type='qcow2'/></target></volume>",
     ("qcow2", "/b")),  # another order: full parse
    ("<volume><target><format type='qcow2'/></target><backingStore>\n  <path>/var/b.qcow2</path>\n"
     "  <format type='raw'/></backingStore></volume>", ("qcow2", "/var/b.qcow2")),
])
def test_shapes(xml: str, want: tuple[str | None, str | None]) -> None:
    assert parse_volume(xml) == want == _full(xml)


@pytest.mark.parametrize("xml", ["<volume><target>", "<pool/>", "not xml"])
def test_what_is_not_a_volume_is_refused(xml: str) -> None:
    with pytest.raises(ValueError):
        parse_volume(xml)
