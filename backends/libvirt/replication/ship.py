"""Shipping a sync's layers: several at once, each committed to the record in chain order.

Each layer is copied on its own (``direct`` when the files are provably here, else a pair of
streams, ``stream``), re-pointed at its parent's replica volume by *name*,
and every name is chosen before anything ships, so the layers of a chain do not wait for
one another: up to ``workers.AT_ONCE`` ship concurrently, each over connections of its own. One at
a time leaves most of the machine idle: a daemon moves a stream's data in one thread, and
the pieces wait for each other along download, hashing and upload.

The record still commits layers base first, as before: a layer counts only once every layer
below it counts. A cancel stops every layer; a failed layer stops the layers above it (they
could never count) while those below it finish and are committed. Whatever did not commit is
deleted, and the next sync resumes at the first layer the record lacks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.errors import OperationFailed
from backends.libvirt.replication.direct import ship_direct
from backends.libvirt.replication.plan import Step, drop_unlisted, volume_name
from backends.libvirt.replication.record import LayerRecord, ReplicaRecord, write_record
from backends.libvirt.replication.stream import Cancelled, Read, ship_layer
from backends.libvirt.replication.tally import Tally
from backends.libvirt.replication.volumes import delete, new_volume, vol_facts
from backends.libvirt.replication.workers import Connect, at_once


class _Halt:
    """Whether one layer stops at its next segment: the job was cancelled, or a layer below it
    (on the same disk) failed, so it could never be committed."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel, self.below_failed = cancel, threading.Event()

    def is_set(self) -> bool:
        return self.cancel.is_set() or self.below_failed.is_set()


@dataclass
class _Layer:
    step: Step
    name: str  # its replica volume
    parent: str | None  # the replica volume below it, None for a base
    halt: _Halt
    outcome: Read | BaseException | None = None
    committed: bool = False


@dataclass
class Shipment:
    """The plan's layers, shipped from ``src_uri`` into ``pool`` on ``dst_uri`` and committed into
    ``record`` through ``dst`` (the job's connection to the destination)."""

    src_uri: str
    dst_uri: str
    dst: Any
    pool: Any
    record: ReplicaRecord
    vm: str
    disks: list[str]
    tally: Tally
    on_commit: Callable[[], object]  # after committing what was ready (the inventory shows the layers land)
    layers: list[_Layer] = field(default_factory=list)

    def run(self, plan: list[Step], cancel: threading.Event) -> bool:
        """Ship and commit ``plan``. False when cancelled (committed layers stay); raises the first
        failure, once the layers below it (and on other disks) have finished and been committed."""
        self._name(plan, cancel)
        shipped = at_once(self.layers, self._ship, (self.src_uri, self.dst_uri), "hvc-ship")
        try:
            for layer, outcome in shipped:
                layer.outcome = outcome
                if isinstance(outcome, BaseException):
                    for above in self._above(layer):
                        above.halt.below_failed.set()
                self._commit_ready()
        finally:
            for layer in self.layers:  # when this thread itself failed: stop them all
                layer.halt.below_failed.set()
            shipped.close()  # waits for the layers still shipping
            for layer in self.layers:
                if not layer.committed:
                    delete(self.pool, layer.name)
        failure = next((layer.outcome for layer in self.layers
                        if isinstance(layer.outcome, BaseException) and not isinstance(layer.outcome, Cancelled)),
                       None)
        if failure is not None:
            raise failure
        return all(layer.committed for layer in self.layers)

    def _above(self, layer: _Layer) -> list[_Layer]:
        return [other for other in self.layers
                if other.step.disk == layer.step.disk and other.step.index > layer.step.index]

    def _name(self, plan: list[Step], cancel: threading.Event) -> None:
        """A replica volume for every step, made now, so each knows its parent's name."""
        by_place: dict[tuple[str, int], str] = {}
        try:
            for step in plan:
                below = self.record.disks.get(step.disk, [])
                parent = None if step.index == 0 else by_place.get((step.disk, step.index - 1)) or (
                    below[step.index - 1].volume)
                name = volume_name(self.pool, self.vm, step)
                new_volume(self.pool, name)
                by_place[(step.disk, step.index)] = name
                self.layers.append(_Layer(step, name, parent, _Halt(cancel)))
        except BaseException:
            for layer in self.layers:
                delete(self.pool, layer.name)
            raise

    def _ship(self, layer: _Layer, connect: Connect) -> Read:
        if layer.halt.is_set():
            raise Cancelled
        src, dst = connect()
        step = layer.step
        vol = src.storageVolLookupByPath(step.facts.path)
        dst_vol = dst.storagePoolLookupByName(self.pool.name()).storageVolLookupByName(layer.name)
        self.tally.disk = step.disk
        read = (ship_direct(src, vol, dst, dst_vol, layer.parent, self.tally.add, layer.halt)
                or ship_layer(src, vol, dst, dst_vol, layer.parent, self.tally.add, layer.halt))
        after = vol_facts(vol)
        if (after.mtime, after.physical) != (step.facts.mtime, step.facts.physical):
            raise OperationFailed(f"{step.facts.path} changed while it shipped",
                                  hint="the guest wrote it; sync again once it is quiet")
        return read

    def _commit_ready(self) -> None:
        """Commit, base first, every finished layer whose layers below are committed, each in the
        record as it goes; then tell ``on_commit`` once (the layers above a slow base finish
        first and land together with it: one inventory refresh for them all, not one each)."""
        committed = False
        try:
            for n, layer in enumerate(self.layers):
                if layer.committed or not isinstance(layer.outcome, Read):
                    continue
                below = self.layers[n - 1] if n and self.layers[n - 1].step.disk == layer.step.disk else None
                if below is not None and not below.committed:
                    continue
                step, read = layer.step, layer.outcome
                layers = self.record.disks.setdefault(step.disk, [])
                layers[step.index:] = [LayerRecord(
                    step.index, step.facts.path, layer.name, read.checksum, read.data_bytes, step.facts.physical,
                    step.facts.mtime, step.sealed, time.time())]
                write_record(self.dst, self.pool, self.record)  # the commit point: now the layer counts
                layer.committed = committed = True
                self.tally.layers_left -= 1
                self.tally.sample()
        finally:
            if committed:
                in_flight = {other.name for other in self.layers if not other.committed}
                drop_unlisted(self.pool, self.record, self.vm, self.disks, keep=in_flight)
                self.on_commit()
