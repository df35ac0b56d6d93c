"""Replication of qcow2 chains between libvirt hosts (S5), and test failover from the replica.

One idea per module:

- ``header``: the qcow2 header cluster, re-pointed in flight; what a layer's checksum covers.
- ``stream``: layers move through sparse libvirt storage-volume streams, no shell on either host.
- ``direct``: the kernel copies a layer's body instead when both volumes are provably local files.
- ``volumes``: volume facts, a disk's volume chain, volumes in a pool.
- ``record``: the replica state, a JSON record in the destination pool (the commit point).
- ``locate``: finding a VM's records on the connected hosts.
- ``plan``: what a sync ships (sealed and active layers), replica volume names.
- ``ship``: a sync's layers shipped concurrently, committed to the record base first.
- ``verify``: the layer-by-layer check after each sync.
- ``workers``: up to ``AT_ONCE`` threads over job connections of their own (``ship``, ``verify``).
- ``tally``: progress of a phase.
- ``operation``: the replicate job; ``failover``: the failover job (test, or planned via
  ``planned``: stop, final sync, start on the replica chain, reverse replication).
- ``status``: replica links for the inventory.
"""

from backends.libvirt.replication.failover import (
    LibvirtFailover,
    trial_domain_xml,
    trial_name,
    trial_overlay_name,
)
from backends.libvirt.replication.header import backing_name, canonical_head, repoint
from backends.libvirt.replication.operation import LibvirtReplicate
from backends.libvirt.replication.planned import LibvirtPlannedFailover, failover_domain_xml
from backends.libvirt.replication.record import LayerRecord, ReplicaRecord, read_record, write_record
from backends.libvirt.replication.status import replica_links

__all__ = [
    "LayerRecord",
    "LibvirtFailover",
    "LibvirtPlannedFailover",
    "LibvirtReplicate",
    "ReplicaRecord",
    "backing_name",
    "canonical_head",
    "failover_domain_xml",
    "read_record",
    "replica_links",
    "repoint",
    "trial_domain_xml",
    "trial_name",
    "trial_overlay_name",
    "write_record",
]
