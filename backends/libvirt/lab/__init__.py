"""A two-host libvirt lab on this one machine, for tests and demos.

Host A is the machine's own ``libvirtd`` (``qemu:///system``). Host B is a second ``libvirtd``
in a private mount namespace (``unshare --mount``) with its own run/lib/etc/log/cache dirs
bind-mounted from ``<state>/b``, its own pid file, host UUID and migration port range, and
``stdio_handler = "file"``. Its socket is ``<state>/b/run/libvirt-sock``. Guest images live
in ``<state>/pool-a`` and ``<state>/pool-b`` (outside ``/var/lib/libvirt``), so both daemons
see the same paths: live migration needs no storage copy. The state dir is
``/var/lib/hvc-lab`` unless ``HVC_LAB_DIR`` says otherwise; ``state.json`` in it records what
the lab started.

``lab_down`` destroys and undefines every ``hvc-lab-*`` guest and the ``hvc-lab`` pools on
both hosts, stops host B and (only if the lab started them) host A's ``libvirtd`` and
``virtlogd``, and deletes the state dir and the guests' QEMU logs. It leaves in place: the
edits to ``/etc/libvirt/qemu.conf`` (user/group root, security_driver none), the users and
groups it created (``kvm``, ``libvirt-qemu``), the standard dirs it created under
``/var/{lib,log,cache}/libvirt`` and ``/run/libvirt``, the installed packages, and the lock
file ``/run/lock/hvc-lab-*.lock``.

Both ``libvirtd`` run under a reaper of their own (``reaper.py``): a stopped QEMU's zombie is
reaped at once, as on a host, and not on this sandbox's PID 1 timer (1–2 s later, which libvirt
waits for at the end of every migration and every stop).

Host B runs with ``cgroup_controllers = []``: both daemons number their domains from 1 and
would otherwise fight over the same ``machine/qemu-<id>-<name>`` cgroup directories.
Everything here needs root. Run ``python -m backends.libvirt.lab up|status|down`` by hand.

Live migration between the hosts (verified): flags ``VIR_MIGRATE_LIVE | VIR_MIGRATE_UNSAFE``
with ``VIR_MIGRATE_PARAM_URI = "tcp://127.0.0.1"`` (``virsh migrate --live --unsafe <dom>
<other uri> --migrateuri tcp://127.0.0.1``). UNSAFE is required because libvirt 9 refuses any
file disk on a local file system ("Migration without shared storage is unsafe") whatever its
cache mode; here the storage really is shared (same files, ``cache='none'``), so it is safe.
The guest arrives on the destination as a transient domain; the source keeps its definition.

Layout: ``common`` (names, paths, ``LabStatus``), ``daemons`` (packages, users, config, state
file and lock, host A and B daemons), ``guests`` (pools, images, domain XML, status),
``lifecycle`` (``lab_up``, ``lab_status``, ``lab_down`` in order), ``__main__`` (the CLI).
"""

from backends.libvirt.lab.common import URI_A, LabStatus, state_dir, uri_b
from backends.libvirt.lab.daemons import stop_host_b
from backends.libvirt.lab.lifecycle import lab_down, lab_status, lab_up

__all__ = ["URI_A", "LabStatus", "lab_down", "lab_status", "lab_up", "state_dir", "stop_host_b", "uri_b"]
