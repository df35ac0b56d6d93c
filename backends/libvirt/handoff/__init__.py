"""Handing a device from one running guest to another on the same libvirt host, or to the host.

Modules: ``device_xml`` (pure XML helpers), ``plan`` (checks, and what moves where),
``host_disk`` (checks and plans for a volume the host holds), ``operation`` (the job).

Device ids:

- ``VM/TARGET`` (``hvc-lab-mover/sdb``): a disk of a running VM, handed to another running
  VM on the same host, or to ``host`` when its source is a volume of one of the host's pools.
- an absolute path (``/var/lib/libvirt/images/data.qcow2``): a storage-pool volume the host
  holds and no domain uses (live or persistent), handed to a running VM (``host_disk``).
- a PCI address (``0000:3b:00.0``) or node-device name (``pci_0000_3b_00_0``): a
  direct-assigned host device (``<hostdev type='pci'>`` or ``<interface type='hostdev'>``),
  handed to a running VM on its host or to ``host`` (the host's own driver).

Phases: **detaching** (``detachDeviceFlags`` with LIVE, plus CONFIG when the owner's
definition holds the device too), **draining** (until libvirt's DEVICE_REMOVED event names
the device's alias, or the live XML no longer lists it; bounded by ``DRAIN_TIMEOUT_S``: a
PCI unplug waits for the guest OS to acknowledge it, SCSI and USB unplugs do not),
**binding** for a PCI device moving between VMs (``nodeDeviceDetachFlags(…, "vfio")``),
**attaching** (the same
device XML without its alias, guest address and boot order; a disk keeps its target name
when free on the receiver, else the next free one).

S2, between the host's driver stack and a VM: host → VM is **building vfio stack**
(``nodeDeviceDetachFlags(…, "vfio")``), **attaching to VM**, **host relinquished** (the node
device is seen bound to vfio-pci, not the host's driver); VM → host is detaching, draining,
**rebuilding host stack** (``nodeDeviceReAttach``), **VM relinquished** (its live XML no longer
lists the device). A failure at any stage returns the device to the host's driver.

S2 for disks: host → VM is **building guest stack** (the volume attached LIVE on the guest's
SCSI bus, else USB, with the first free ``sd*`` name), **host relinquished** (the guest's live
XML lists the path and no other domain does; else it is unplugged again); a failed attach
leaves it with the host. VM → host is detaching, draining, **rebuilding host stack** (the
volume's pool is refreshed and ``storageVolLookupByPath`` finds it there), **VM relinquished**
(the guest's live XML no longer lists the path); a failure after the detach gives it back to the VM.

Nothing is lost on failure: if the receiver refuses the device, it goes back to its owner
(or, for a device taken from the host, back to the host's driver) and the result names both
reasons. A cancel before detaching changes nothing; a cancel after it puts the device back.
"""

from backends.libvirt.handoff.device_xml import (
    dev_name,
    disk_targets,
    find_disk,
    find_pci,
    free_target,
    hostdev_xml,
    portable_device_xml,
)
from backends.libvirt.handoff.operation import LibvirtHandoff

__all__ = [
    "LibvirtHandoff",
    "dev_name",
    "disk_targets",
    "find_disk",
    "find_pci",
    "free_target",
    "hostdev_xml",
    "portable_device_xml",
]
