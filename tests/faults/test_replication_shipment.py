"""Layers shipped concurrently (``replication.ship``), on fake pools and streams: the record
commits them base first whatever order they finish in; a layer that fails stops the layers
above it while those below finish and count; a cancel keeps only whole, committed layers;
nothing uncommitted is left behind, and the next sync resumes and ends byte-identical."""

from __future__ import annotations

import hashlib
import re
import threading
import time

import libvirt
import pytest

from backends.libvirt.replication import ship
from backends.libvirt.replication.plan import Step
from backends.libvirt.replication.record import ReplicaRecord, read_record
from backends.libvirt.replication.tally import Tally
from backends.libvirt.replication.volumes import vol_facts
from backends.progress import Meter
from tests.faults.figures import Figures

VM, DISK = "vm1", "sda"
PIECE = 64 << 10


class Vol:
    def __init__(self, pool: Pool, name: str, data: bytes = b"") -> None:
        self.pool, self._name, self.data = pool, name, bytearray(data)
        self.fail_after: int | None = None  # pieces served before the download drops
        self.slow_s = 0.0  # per piece served

    def name(self) -> str:
        return self._name

    def path(self) -> str:
        return f"/{self.pool.name()}/{self._name}"

    def XMLDesc(self, _flags: int) -> str:
        n = len(self.data)
        return (f"<volume><name>{self._name}</name><capacity>{n}</capacity><allocation>{n}</allocation>"
                f"<physical>{n}</physical><target><path>{self.path()}</path><format type='raw'/>"
                f"<timestamps><mtime>1.0</mtime></timestamps></target></volume>")

    def download(self, stream: Stream, _offset: int, _length: int, _flags: int) -> None:
        stream.source = self

    def upload(self, stream: Stream, _offset: int, _length: int, _flags: int) -> None:
        stream.sink = self
        self.data = bytearray()

    def delete(self, _flags: int) -> None:
        del self.pool.vols[self._name]


class Pool:
    def __init__(self, name: str) -> None:
        self._name = name
        self.vols: dict[str, Vol] = {}

    def name(self) -> str:
        return self._name

    def createXML(self, xml: str, _flags: int) -> Vol:
        found = re.search(r"<name>(.*?)</name>", xml)
        assert found is not None
        vol = self.vols[found.group(1)] = Vol(self, found.group(1))
        return vol

    def listVolumes(self) -> list[str]:
        return list(self.vols)

    def storageVolLookupByName(self, name: str) -> Vol:
        if name not in self.vols:
            raise libvirt.libvirtError(f"no storage vol with matching name '{name}'")
        return self.vols[name]


class Stream:
    def __init__(self) -> None:
        self.source: Vol | None = None
        self.sink: Vol | None = None
        self.offset = self.served = 0
        self.aborted = self.finished = False

    def recvFlags(self, n: int, _flags: int) -> bytes:
        src = self.source
        assert src is not None
        if src.fail_after is not None and self.served >= src.fail_after:
            raise libvirt.libvirtError("Cannot recv data: Connection reset by peer")
        time.sleep(src.slow_s)
        got = bytes(src.data[self.offset:self.offset + min(n, PIECE)])
        self.offset += len(got)
        self.served += 1
        return got

    def recv(self, n: int) -> bytes:
        return self.recvFlags(n, 0)

    def send(self, data: bytes) -> int:
        assert self.sink is not None
        self.sink.data += data
        return len(data)

    def sendHole(self, length: int, _flags: int) -> None:
        assert self.sink is not None
        self.sink.data += bytes(length)

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


class Conn:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def newStream(self, _flags: int) -> Stream:
        return Stream()

    def storageVolLookupByPath(self, path: str) -> Vol:
        return self.pool.storageVolLookupByName(path.rsplit("/", 1)[1])

    def storagePoolLookupByName(self, _name: str) -> Pool:
        return self.pool

    def close(self) -> None:
        pass


class Hosts:
    """A primary pool with a three-layer chain (base largest) and an empty destination pool."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.src, self.dst = Pool("a"), Pool("b")
        for name, size, byte in (("base", 40, b"B"), ("mid", 12, b"M"), ("top", 3, b"T")):
            self.src.vols[name] = Vol(self.src, name, byte * (size * PIECE))
        by_uri = {"src": self.src, "dst": self.dst}
        monkeypatch.setattr(ship, "open_job_connection", lambda uri: Conn(by_uri[uri]))

    def plan(self, record: ReplicaRecord) -> list[Step]:
        chain = ["base", "mid", "top"]
        have = len(record.disks.get(DISK, []))
        return [Step(DISK, i, self.src.vols[n], vol_facts(self.src.vols[n]), sealed=i < 2)
                for i, n in enumerate(chain) if i >= have]

    def sync(self, record: ReplicaRecord, cancel: threading.Event | None = None) -> bool:
        tally = Tally(lambda _e: None, Meter("job", "bytes", time.time), "shipping", 0, layers_left=3)
        shipment = ship.Shipment("src", "dst", Conn(self.dst), self.dst, record, VM, [DISK], tally,
                                 on_commit=lambda: None)
        return shipment.run(self.plan(record), cancel or threading.Event())

    def replica(self) -> list[str]:
        """Layer volumes at the destination (records aside), base first."""
        return sorted((n for n in self.dst.vols if not n.endswith(".json")), key=lambda n: n.split(".")[2])

    def committed(self) -> list[str]:
        found = read_record(Conn(self.dst), self.dst, VM)
        return [layer.volume for layer in found.disks.get(DISK, [])] if found else []


def _record() -> ReplicaRecord:
    return ReplicaRecord(VM, "uuid-1", "a", "b", "b", 300.0)


def _identical(hosts: Hosts, record: ReplicaRecord) -> None:
    layers = record.disks[DISK]
    assert [layer.primary_path.rsplit("/", 1)[1] for layer in layers] == ["base", "mid", "top"]
    assert hosts.replica() == [layer.volume for layer in layers] == hosts.committed()
    for layer in layers:
        primary = hosts.src.vols[layer.primary_path.rsplit("/", 1)[1]].data
        assert hosts.dst.vols[layer.volume].data == primary
        assert layer.checksum == hashlib.sha256(primary).hexdigest()


def test_layers_finishing_out_of_order_commit_base_first(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = Hosts(monkeypatch)
    hosts.src.vols["base"].slow_s = 0.002  # the top and middle finish long before the base
    record = _record()
    assert hosts.sync(record)
    _identical(hosts, record)


def test_a_middle_layer_that_drops_stops_the_layers_above_and_keeps_the_base(
        monkeypatch: pytest.MonkeyPatch, figures: Figures) -> None:
    hosts = Hosts(monkeypatch)
    record = _record()
    with figures.fault("the source drops inside the middle layer while three layers ship"):
        hosts.src.vols["mid"].fail_after = 4
        hosts.src.vols["top"].slow_s = 0.01  # still shipping when the middle one fails
        with pytest.raises(libvirt.libvirtError, match="Connection reset"):
            hosts.sync(record)
        assert [layer.primary_path for layer in record.disks[DISK]] == ["/a/base"]
        assert hosts.replica() == hosts.committed() == [record.disks[DISK][0].volume]
        hosts.src.vols["mid"].fail_after = None
        hosts.src.vols["top"].slow_s = 0.0
        assert hosts.sync(record)  # the next sync ships the two missing layers
        _identical(hosts, record)


def test_a_sync_cancelled_while_layers_ship_keeps_only_committed_layers(
        monkeypatch: pytest.MonkeyPatch, figures: Figures) -> None:
    hosts = Hosts(monkeypatch)
    record = _record()
    cancel = threading.Event()
    with figures.fault("a sync cancelled while three layers ship at once"):
        for vol in hosts.src.vols.values():
            vol.slow_s = 0.002
        threading.Timer(0.05, cancel.set).start()
        assert not hosts.sync(record, cancel)
        assert hosts.replica() == hosts.committed() == [layer.volume for layer in record.disks.get(DISK, [])]
        assert len(hosts.replica()) < 3
        for vol in hosts.src.vols.values():
            vol.slow_s = 0.0
        assert hosts.sync(record)
        _identical(hosts, record)


def test_a_cancel_before_any_layer_starts_ships_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = Hosts(monkeypatch)
    cancel = threading.Event()
    cancel.set()
    record = _record()
    assert not hosts.sync(record, cancel)
    assert hosts.replica() == [] and DISK not in record.disks
