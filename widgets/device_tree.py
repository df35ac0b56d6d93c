"""PCI devices as a tree: host → IOMMU group → device, with SR-IOV VFs under their PF.

Who owns each device is the point of the view: a VM, the host's driver stack, vfio (free)
or nothing. Conflicts found elsewhere (double claims, split IOMMU groups) arrive as short
texts keyed by (host, address) and are shown on the device's line and counted on its
ancestors, so a collapsed branch still says that something inside needs a look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from backends.models import OwnerKind, PciDevice, StorageService

NodeKey = tuple[str, ...]
GUIDE = 3  # cells of indentation per tree level
DRIVER_COLUMN = 46  # where the driver starts on every device line, whatever its depth
FLAG_STYLE = "bold red"


def owner_text(device: PciDevice) -> Text:
    """The owner, styled by kind: a VM in bold, the host stack as host:<driver>."""
    owner = device.owner
    if owner.kind is OwnerKind.VM:
        return Text.assemble(("vm ", "dim"), (owner.vm or "?", "bold"))
    if owner.kind is OwnerKind.HOST:
        return Text(f"host:{owner.driver or device.driver or '?'}", style="cyan")
    if owner.kind is OwnerKind.VFIO:
        return Text("vfio (free)", style="green")
    return Text("unbound", style="yellow")


def clip(text: str, width: int) -> str:
    """Pad or cut to exactly ``width`` cells, ending a cut with an ellipsis."""
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def product_width(depth: int, expandable: bool) -> int:
    """Width of the product column so the driver column lines up across tree depths."""
    start = depth * GUIDE + (2 if expandable else 0) + len("0000:00:00.0  ")
    return max(12, DRIVER_COLUMN - start - 2)


def device_label(
    device: PciDevice,
    flag: str | None = None,
    vf_summary: Text | None = None,
    *,
    width: int = 28,
    pf_product: str | None = None,
) -> Text:
    """address, product (cut to ``width``), driver and owner; a VF drops its PF's product name."""
    product = device.product or device.device_class or "unknown device"
    if pf_product and product.startswith(pf_product) and product != pf_product:
        product = product[len(pf_product) :].strip()
    text = Text.assemble(
        (device.address, "bold" if device.vfs else ""),
        "  ",
        (clip(product, width), "" if device.product else "dim"),
        "  ",
        (clip(device.driver or "—", 11), "dim"),
        " ",
        owner_text(device),
    )
    if vf_summary is not None:
        text.append("  ").append_text(vf_summary)
    if flag:
        text.append(f"  ⚠ {flag}", style=FLAG_STYLE)
    return text


def conflict_badge(count: int) -> Text:
    if not count:
        return Text()
    return Text(f"  ⚠ {count} conflict{'s' if count > 1 else ''}", style=FLAG_STYLE)


@dataclass
class _Spec:
    """One node to build: its stable key, label, data and children."""

    key: NodeKey
    label: Text
    data: PciDevice | None = None
    children: list[_Spec] = field(default_factory=list)


class DeviceTree(Tree[PciDevice | None]):
    """Devices of one or more hosts; refreshes keep expansion and the cursor's device."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_home", "Top", show=False),
        Binding("G", "scroll_end", "Bottom", show=False),
        Binding("h", "fold", "Collapse", show=False),
        Binding("l", "unfold", "Expand", show=False),
    ]

    def action_fold(self) -> None:
        """Collapse the current node, or step out to its parent when it is not open."""
        node = self.cursor_node
        if node is not None and node.allow_expand and node.is_expanded:
            node.collapse()
        else:
            self.action_cursor_parent()

    def action_unfold(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand:
            node.expand()

    def __init__(self, **kwargs: object) -> None:
        super().__init__("devices", **kwargs)  # type: ignore[arg-type]
        self.show_root = False
        self.guide_depth = GUIDE
        self._node_of: dict[NodeKey, TreeNode[PciDevice | None]] = {}
        self._parent_of: dict[NodeKey, NodeKey | None] = {}
        self._key_of: dict[int, NodeKey] = {}  # node id → key
        self._has_shown = False

    def show(self, devices: Sequence[PciDevice], flags: Mapping[tuple[str, str], str] = {},
             services: Sequence[StorageService] = ()) -> None:
        expanded = {key: node.is_expanded for key, node in self._node_of.items()}
        cursor, old_parents = self.cursor_key, dict(self._parent_of)
        self.clear()
        self._node_of.clear()
        self._parent_of.clear()
        self._key_of.clear()
        for spec in build_specs(devices, flags, services):
            self._add(self.root, spec, None, expanded)
        self.last_line  # noqa: B018  (index the new lines so nodes know where they are)
        target = self._surviving(cursor, old_parents)
        if target is not None:
            self.move_cursor(target)
        elif not self._has_shown and self._node_of:
            self.cursor_line = 0
        self._has_shown = True

    def _add(
        self,
        parent: TreeNode[PciDevice | None],
        spec: _Spec,
        parent_key: NodeKey | None,
        expanded: Mapping[NodeKey, bool],
    ) -> None:
        if spec.children:
            node = parent.add(spec.label, spec.data, expand=expanded.get(spec.key, True))
        else:
            node = parent.add_leaf(spec.label, spec.data)
        self._node_of[spec.key] = node
        self._key_of[node.id] = spec.key
        self._parent_of[spec.key] = parent_key
        for child in spec.children:
            self._add(node, child, spec.key, expanded)

    def _surviving(
        self, key: NodeKey | None, old_parents: Mapping[NodeKey, NodeKey | None]
    ) -> TreeNode[PciDevice | None] | None:
        """The visible node for ``key`` after a refresh, else its nearest visible ancestor."""
        while key is not None:
            node = self._node_of.get(key)
            if node is not None and node.line >= 0:
                return node
            key = self._parent_of[key] if key in self._parent_of else old_parents.get(key)
        return None

    @property
    def cursor_key(self) -> NodeKey | None:
        """The stable key of the node under the cursor: ("dev", host, address), ("group", …), ("host", …)."""
        node = self.cursor_node
        key = None if node is None else self._key_of.get(node.id)
        return key if key is not None and self._node_of.get(key) is node else None

    def node_for(self, host: str, address: str) -> TreeNode[PciDevice | None] | None:
        return self._node_of.get(("dev", host, address))

    def node_by_key(self, key: NodeKey) -> TreeNode[PciDevice | None] | None:
        return self._node_of.get(key)


def build_specs(devices: Sequence[PciDevice], flags: Mapping[tuple[str, str], str],
                services: Sequence[StorageService] = ()) -> list[_Spec]:
    """Hosts in the order they first appear, groups by number (ungrouped last), devices by address.

    A VF carrying a storage service's identifier (S8) shows it after its owner."""
    carried = {(s.host, s.vf): s for s in services if s.vf}
    by_host: dict[str, list[PciDevice]] = {}
    for device in devices:
        by_host.setdefault(device.host, []).append(device)
    hosts = []
    for host, host_devices in by_host.items():
        groups, count = _group_specs(host, host_devices, flags, carried)
        n = len(host_devices)
        label = Text.assemble((host, "bold"), (f"  {n} device{'s' * (n != 1)}", "dim"), conflict_badge(count))
        hosts.append(_Spec(("host", host), label, None, groups))
    return hosts


def _group_specs(host: str, devices: list[PciDevice], flags: Mapping[tuple[str, str], str],
                 carried: Mapping[tuple[str, str], StorageService]) -> tuple[list[_Spec], int]:
    addresses = {d.address: d for d in devices}
    # A VF goes under its PF when the PF is listed; otherwise it stays in its own group.
    vfs_of: dict[str, list[PciDevice]] = {}
    for d in devices:
        if d.physfn is not None and d.physfn in addresses:
            vfs_of.setdefault(d.physfn, []).append(d)
    groups: dict[int | None, list[PciDevice]] = {}
    for d in devices:
        if d.physfn is None or d.physfn not in addresses:
            groups.setdefault(d.iommu_group, []).append(d)
    specs, total = [], 0
    for group in sorted(groups, key=lambda g: (g is None, g or 0)):
        members = sorted(groups[group], key=lambda d: d.address)
        children = [_device_spec(d, vfs_of.get(d.address, []), flags, carried) for d in members]
        flagged = sum(_flag_count(d, vfs_of, flags) for d in members)
        name = "no IOMMU group" if group is None else f"IOMMU group {group}"
        label = Text.assemble((name, "bold dim" if group is None else "bold"), conflict_badge(flagged))
        specs.append(_Spec(("group", host, str(group)), label, None, children))
        total += flagged
    return specs, total


def _flag_count(d: PciDevice, vfs_of: Mapping[str, list[PciDevice]], flags: Mapping[tuple[str, str], str]) -> int:
    return ((d.host, d.address) in flags) + sum((v.host, v.address) in flags for v in vfs_of.get(d.address, []))


def identifier_text(service: StorageService | None) -> Text | None:
    """What a VF carrying a storage service's identifier adds to its line."""
    if service is None:
        return None
    return Text.assemble(("⇄ ", "dim"), (service.identifier, "magenta"), (f" {service.name}", "dim"))


def _device_spec(d: PciDevice, vfs: list[PciDevice], flags: Mapping[tuple[str, str], str],
                 carried: Mapping[tuple[str, str], StorageService]) -> _Spec:
    order = {address: i for i, address in enumerate(d.vfs)}
    vfs = sorted(vfs, key=lambda v: (order.get(v.address, len(order)), v.address))
    summary = None
    if d.vfs or vfs:
        total = max(len(d.vfs), len(vfs))
        assigned = sum(v.owner.kind is OwnerKind.VM for v in vfs)
        summary = Text(f"{total} VFs · {assigned} assigned", style="italic")
        inner = sum((v.host, v.address) in flags for v in vfs)
        if inner:
            summary.append_text(conflict_badge(inner))
    vf_width = product_width(3, False)
    children = [
        _Spec(
            ("dev", v.host, v.address),
            device_label(v, flags.get((v.host, v.address)), identifier_text(carried.get((v.host, v.address))),
                         width=vf_width, pf_product=d.product),
            v,
        )
        for v in vfs
    ]
    width = product_width(2, bool(children))
    label = device_label(d, flags.get((d.host, d.address)), summary, width=width)
    return _Spec(("dev", d.host, d.address), label, d, children)
