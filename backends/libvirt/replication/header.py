"""The qcow2 header cluster: reading, blanking and re-pointing a layer's backing file name.

Re-pointing. A layer's backing pointer at the primary names its primary parent (often
an absolute path). On its way out the qcow2 header is rewritten *in the stream* so the
layer lands pointing at its replicated parent by a relative name (the parent's volume
name: every replica layer of a disk lives in one directory pool). Nothing runs on the
destination; ``qemu-img rebase -u`` would do the same, but needs a shell there. Only the
header cluster's backing-file offset/length/name change (qcow2 keeps the name in cluster 0,
after the header extensions).

Checksums. A layer's checksum (XXH128, see ``checksum``) is made over its file bytes (holes
read as zeros) with the backing pointer blanked: header bytes 8..20 (backing offset and length)
and the header cluster from the backing name on. So a replica layer, whose pointer was re-pointed on
purpose, has the same checksum as its primary layer iff everything else is identical.
"""

from __future__ import annotations

import struct

from backends.errors import OperationFailed

QCOW2_MAGIC = b"QFI\xfb"


def _backing(head: bytes) -> tuple[int, int] | None:
    """(offset, length) of the backing file name in a qcow2 header, None when it has none."""
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, length = struct.unpack(">QI", head[8:20])
    return (offset, length) if offset and length else None


def cluster_size(head: bytes) -> int | None:
    """The cluster size a qcow2 header declares, None when ``head`` is not qcow2."""
    if len(head) < 24 or head[:4] != QCOW2_MAGIC:
        return None
    bits: int = struct.unpack(">I", head[20:24])[0]
    return 1 << bits


def backing_name(head: bytes) -> str | None:
    """The backing file name a qcow2 header cluster points at."""
    found = _backing(head)
    if found is None:
        return None
    offset, length = found
    return head[offset:offset + length].decode("utf-8", "replace")


def canonical_head(head: bytes) -> bytes:
    """The header cluster with the backing pointer blanked (see this module's docstring)."""
    if head[:4] != QCOW2_MAGIC:
        return head
    out = bytearray(head)
    found = _backing(head)
    out[8:20] = bytes(12)
    if found is not None:
        out[found[0]:] = bytes(len(out) - found[0])
    return bytes(out)


def repoint(head: bytes, parent: str | None) -> bytes:
    """The header cluster with its backing name replaced by ``parent`` (same place in cluster 0)."""
    found = _backing(head)
    if found is None:
        if parent is not None:
            raise OperationFailed("a layer with a parent has no backing pointer in its qcow2 header")
        return head
    if parent is None:
        raise OperationFailed("the base layer has a backing file; replicate the whole chain")
    offset, _ = found
    name = parent.encode()
    if len(name) > 1023 or offset + len(name) > len(head):
        raise OperationFailed(f"the replica name {parent!r} does not fit in the layer's qcow2 header")
    out = bytearray(head)
    out[8:20] = struct.pack(">QI", offset, len(name))
    out[offset:] = bytes(len(out) - offset)
    out[offset:offset + len(name)] = name
    return bytes(out)
