"""Layers shipped concurrently (``replication.ship``), on fake pools and streams: the record
commits them base first whatever order they finish in; a layer that fails stops the layers
above it while those below finish and count; a cancel keeps only whole, committed layers;
nothing uncommitted is left behind, and the next sync resumes and ends byte-identical.

The same for the direct path (``replication.direct``), with pools whose volumes are files in
tmp directories; and the direct path's proof failing (another file at the same path, as in
another mount namespace) ships through the streams instead."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import libvirt
import pytest
import xxhash

from backends.errors import OperationFailed
from backends.libvirt.replication import direct, ship, workers
from backends.libvirt.replication.header import canonical_head
from backends.libvirt.replication.plan import Step
from backends.libvirt.replication.record import ReplicaRecord, read_record
from backends.libvirt.replication.stream import Read, read_layer
from backends.libvirt.replication.tally import Tally
from backends.libvirt.replication.volumes import vol_facts
from backends.progress import Meter
from tests.faults.figures import Figures

VM, DISK = "vm1", "sda"
PIECE = 64 << 10


class Vol:
    """A volume held in memory, or (in a pool with a directory) in a file there."""

    def __init__(self, pool: Pool, name: str, data: bytes | None = b"") -> None:
        """``data`` None: a file already in the pool's directory, as it is."""
        self.pool, self._name = pool, name
        self._data = bytearray()
        if data is not None:
            self.data = bytearray(data)
        self.fail_after: int | None = None  # pieces served before the download drops
        self.slow_s = 0.0  # per piece served

    @property
    def file(self) -> Path | None:
        return self.pool.dir / self._name if self.pool.dir else None

    @property
    def data(self) -> bytearray:
        return bytearray(self.file.read_bytes()) if self.file else self._data

    @data.setter
    def data(self, value: bytearray) -> None:
        if self.file:
            self.file.write_bytes(value)
        else:
            self._data = value

    def name(self) -> str:
        return self._name

    def path(self) -> str:
        shown = self.pool.dir or self.pool.shown_dir
        return str(shown / self._name) if shown else f"/{self.pool.name()}/{self._name}"

    def _mtime(self) -> str:
        if not self.file:
            return "1.0"
        ns = os.stat(self.file).st_mtime_ns
        return f"{ns // 10**9}.{ns % 10**9:09d}"

    def XMLDesc(self, _flags: int) -> str:
        n = len(self.data)
        return (f"<volume><name>{self._name}</name><capacity>{n}</capacity><allocation>{n}</allocation>"
                f"<physical>{n}</physical><target><path>{self.path()}</path><format type='raw'/>"
                f"<timestamps><mtime>{self._mtime()}</mtime></timestamps></target></volume>")

    def infoFlags(self, _flags: int) -> list[int]:
        n = len(self.data)
        return [0, n, n]

    def download(self, stream: Stream, offset: int, length: int, _flags: int) -> None:
        stream.source, stream.offset = self, offset
        stream.end = offset + length if length else None

    def upload(self, stream: Stream, _offset: int, _length: int, _flags: int) -> None:
        stream.sink = self
        self.data = bytearray()

    def delete(self, _flags: int) -> None:
        if self.file:
            self.file.unlink()
        del self.pool.vols[self._name]


class Pool:
    """``dir``: its volumes are files there. ``shown_dir``: held in memory, but their paths name
    files there (what another mount namespace would show at the same paths)."""

    def __init__(self, name: str, dir: Path | None = None, shown_dir: Path | None = None) -> None:
        self._name, self.dir, self.shown_dir = name, dir, shown_dir
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
        self.end: int | None = None
        self.aborted = self.finished = False

    def recvFlags(self, n: int, _flags: int) -> bytes:
        src = self.source
        assert src is not None
        if src.fail_after is not None and self.served >= src.fail_after:
            raise libvirt.libvirtError("Cannot recv data: Connection reset by peer")
        time.sleep(src.slow_s)
        end = self.offset + min(n, PIECE)
        got = bytes(src.data[self.offset:end if self.end is None else min(end, self.end)])
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

    def __init__(self, monkeypatch: pytest.MonkeyPatch, src: Pool | None = None, dst: Pool | None = None) -> None:
        self.src, self.dst = src or Pool("a"), dst or Pool("b")
        for name, size, byte in (("base", 40, b"B"), ("mid", 12, b"M"), ("top", 3, b"T")):
            self.src.vols[name] = Vol(self.src, name, byte * (size * PIECE))
        by_uri = {"src": self.src, "dst": self.dst}
        monkeypatch.setattr(workers, "open_job_connection", lambda uri: Conn(by_uri[uri]))
        self.shipment: ship.Shipment | None = None
        self.refreshes = 0  # on_commit calls (the operation refreshes the inventory on each)

    def plan(self, record: ReplicaRecord) -> list[Step]:
        chain = ["base", "mid", "top"]
        have = len(record.disks.get(DISK, []))
        return [Step(DISK, i, self.src.vols[n], vol_facts(self.src.vols[n]), sealed=i < 2)
                for i, n in enumerate(chain) if i >= have]

    def sync(self, record: ReplicaRecord, cancel: threading.Event | None = None) -> bool:
        tally = Tally(lambda _e: None, Meter("job", "bytes", time.time), "shipping", 0, layers_left=3)
        self.shipment = ship.Shipment("src", "dst", Conn(self.dst), self.dst, record, VM, [DISK], tally,
                                      on_commit=self._refresh)
        return self.shipment.run(self.plan(record), cancel or threading.Event())

    def _refresh(self) -> None:
        self.refreshes += 1

    def routes(self) -> list[str]:
        """How each layer of the last sync moved ("direct" or "stream"), for those that finished."""
        assert self.shipment is not None
        return [layer.outcome.route for layer in self.shipment.layers if isinstance(layer.outcome, Read)]

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
        assert layer.checksum == f"xxh128:{xxhash.xxh3_128(primary).hexdigest()}"


def test_layers_finishing_out_of_order_commit_base_first(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = Hosts(monkeypatch)
    hosts.src.vols["base"].slow_s = 0.002  # the top and middle finish long before the base
    record = _record()
    assert hosts.sync(record)
    _identical(hosts, record)
    assert hosts.refreshes == 1  # the three landed together: one inventory refresh


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


# --------------------------------------------------------------------------- the direct path


def _local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Hosts:
    """Both pools are directories here: the direct path's proof holds. Small pieces, so that a
    layer takes several (each a look at the cancel flag)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setattr(direct, "PIECE", 4 * PIECE)
    return Hosts(monkeypatch, Pool("a", dir=tmp_path / "a"), Pool("b", dir=tmp_path / "b"))


def _files(hosts: Hosts) -> list[str]:
    assert hosts.dst.dir is not None
    return sorted(p.name for p in hosts.dst.dir.iterdir() if not p.name.endswith(".json"))


def _failing_copy(monkeypatch: pytest.MonkeyPatch, layer: str, after: int, slow_s: float = 0.0) -> None:
    """``direct.copy_range`` failing with EIO after ``after`` pieces of ``layer`` (any layer
    when ``after`` is None), each piece taking ``slow_s``."""
    real = direct.copy_range
    done: dict[int, int] = {}

    def copy(src: int, dst: int, offset: int, length: int) -> None:
        time.sleep(slow_s)
        if os.readlink(f"/proc/self/fd/{src}").endswith(f"/{layer}"):
            done[src] = done.get(src, 0) + 1
            if done[src] > after:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(src, dst, offset, length)

    monkeypatch.setattr(direct, "copy_range", copy)


def test_direct_layers_ship_byte_identical_with_the_stream_paths_checksums(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hosts = _local(monkeypatch, tmp_path)
    record = _record()
    assert hosts.sync(record)
    assert hosts.routes() == ["direct"] * 3
    _identical(hosts, record)
    assert _files(hosts) == hosts.committed()


def test_a_direct_copy_that_fails_mid_layer_keeps_the_layers_below_and_leaves_no_partial_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, figures: Figures) -> None:
    hosts = _local(monkeypatch, tmp_path)
    record = _record()
    with figures.fault("the disk fails (EIO) inside the middle layer's direct copy"):
        with monkeypatch.context() as patch:
            _failing_copy(patch, "mid", after=1)
            with pytest.raises(OperationFailed, match="Input/output error"):
                hosts.sync(record)
        assert [layer.primary_path.rsplit("/", 1)[1] for layer in record.disks[DISK]] == ["base"]
        assert hosts.replica() == hosts.committed() == _files(hosts) == [record.disks[DISK][0].volume]
        assert hosts.sync(record)  # the next sync copies the two missing layers
        assert hosts.routes() == ["direct"] * 2
        _identical(hosts, record)
        assert _files(hosts) == hosts.committed()


def test_a_sync_cancelled_mid_direct_copy_keeps_only_committed_layers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, figures: Figures) -> None:
    hosts = _local(monkeypatch, tmp_path)
    record = _record()
    cancel = threading.Event()
    with figures.fault("a sync cancelled while three layers are copied directly"):
        with monkeypatch.context() as patch:
            _failing_copy(patch, "base", after=1_000, slow_s=0.02)  # slow, never failing
            threading.Timer(0.05, cancel.set).start()
            assert not hosts.sync(record, cancel)
        assert hosts.replica() == hosts.committed() == _files(hosts)
        assert DISK not in record.disks or len(record.disks[DISK]) < 3
        assert hosts.sync(record)
        _identical(hosts, record)
        assert _files(hosts) == hosts.committed()


def _decoys(directory: Path, names: list[str], data: dict[str, bytes]) -> None:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(data.get(name, b"another file of the same name"))


def test_a_destination_path_naming_another_file_here_ships_through_streams(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, figures: Figures) -> None:
    """Host B's pool in a mount namespace of its own: its volume paths name other files here."""
    (tmp_path / "a").mkdir()
    elsewhere = tmp_path / "b-as-seen-here"
    hosts = Hosts(monkeypatch, Pool("a", dir=tmp_path / "a"), Pool("b", shown_dir=elsewhere))
    real_create = hosts.dst.createXML

    def create(xml: str, flags: int) -> Vol:
        vol = real_create(xml, flags)
        _decoys(elsewhere, [vol.name()], {})
        return vol

    monkeypatch.setattr(hosts.dst, "createXML", create)
    record = _record()
    with figures.fault("the destination's volume paths name other files on this machine"):
        assert hosts.sync(record)
        assert hosts.routes() == ["stream"] * 3
        _identical(hosts, record)
        assert {p.read_bytes() for p in elsewhere.iterdir()} == {b"another file of the same name"}


def test_a_source_file_here_that_is_not_the_volume_ships_through_streams(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, figures: Figures) -> None:
    """The source's paths name files here with the same size and first bytes, but not the same
    file (another mtime): streams, whose bytes are the volume's."""
    elsewhere = tmp_path / "a-as-seen-here"
    hosts = Hosts(monkeypatch, Pool("a", shown_dir=elsewhere))
    (tmp_path / "b").mkdir()
    hosts.dst.dir = tmp_path / "b"
    _decoys(elsewhere, list(hosts.src.vols), {
        name: bytes(vol.data[:PIECE]) + bytes(len(vol.data) - PIECE) for name, vol in hosts.src.vols.items()})
    for name in hosts.src.vols:
        os.utime(elsewhere / name, ns=(2 * 10**9, 2 * 10**9))
    record = _record()
    with figures.fault("the source's volume paths name other files of the same size and header here"):
        assert hosts.sync(record)
        assert hosts.routes() == ["stream"] * 3
        _identical(hosts, record)


def test_direct_and_stream_read_a_sparse_qcow2_layer_to_the_same_checksum(tmp_path: Path) -> None:
    pool = Pool("a", dir=tmp_path)
    base, top = tmp_path / "base", tmp_path / "top"
    for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"],
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top), "64M"],
                ["qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 2M 64k", str(top)]):
        subprocess.run(cmd, check=True, capture_output=True)
    os.truncate(top, os.path.getsize(top) + 3 * PIECE)  # and a hole at the end
    vol = pool.vols["top"] = Vol(pool, "top", None)
    local = direct.read_local(Conn(pool), vol)
    streamed = read_layer(Conn(pool), vol)
    assert local is not None and local.route == "direct" and streamed.route == "stream"
    assert (local.checksum, local.backing) == (streamed.checksum, streamed.backing) == (
        f"xxh128:{xxhash.xxh3_128(canonical_head(top.read_bytes()[:65536]) + top.read_bytes()[65536:]).hexdigest()}",
        str(base))
