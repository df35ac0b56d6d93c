"""The PCI device tree: host → IOMMU group → device → VFs, owners, conflicts, stable refreshes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets.tree import TreeNode

from backends.models import Owner, OwnerKind, PciDevice
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from widgets.device_tree import GUIDE, DeviceTree, NodeKey

Node = TreeNode[PciDevice | None]
SPLIT = "IOMMU group 80 split: ml-train-02, host"
FLAGS = {("fra-gpu01", "0000:ca:00.0"): SPLIT, ("fra-gpu01", "0000:ca:00.1"): SPLIT}


def demo_devices() -> tuple[PciDevice, ...]:
    return SimBackend(load_fleet(demo_fleet_path())).snapshot().devices


def dev(
    address: str, host: str = "h1", group: int | None = 1, kind: OwnerKind = OwnerKind.HOST, **kw: object
) -> PciDevice:
    """A hand-made device; its driver follows the owner kind unless given."""
    driver = {OwnerKind.HOST: "widget", OwnerKind.UNBOUND: None}.get(kind, "vfio-pci")
    owner = Owner(kind, vm="vm-a" if kind is OwnerKind.VM else None, driver=driver)
    fields: dict[str, object] = {
        "vendor": "Acme",
        "product": "Widget NIC",
        "device_class": "Ethernet controller",
        "driver": owner.driver,
        "iommu_group": group,
        "owner": owner,
    }
    fields.update(kw)
    return PciDevice(address, host, **fields)  # type: ignore[arg-type]


def label(node: Node | None) -> Text:
    """A node's label as rich Text (the tree stores Text; its declared type is str | Text)."""
    assert node is not None and isinstance(node.label, Text)
    return node.label


def plain(node: Node | None) -> str:
    return label(node).plain


def labels(nodes: Iterable[Node]) -> list[str]:
    return [plain(n) for n in nodes]


def styled(node: Node | None, fragment: str, style: str) -> bool:
    """Whether the first character of ``fragment`` on the node's line carries ``style``."""
    text = label(node)
    at = text.plain.index(fragment)
    return any(s.start <= at < s.end and style in str(s.style) for s in text.spans)


def depth(node: Node) -> int:
    d = -1
    while node.parent is not None:
        node, d = node.parent, d + 1
    return d


def key(tree: DeviceTree) -> NodeKey | None:
    return tree.cursor_key


class TreeApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DeviceTree()


async def test_hosts_hold_groups_which_hold_devices_and_a_pf_holds_its_vfs() -> None:
    async with TreeApp().run_test(size=(120, 40)) as pilot:
        tree = pilot.app.query_one(DeviceTree)
        tree.show(demo_devices(), FLAGS)
        await pilot.pause()
        hosts = tree.root.children
        names = [plain(h).split()[0] for h in hosts]
        assert names == ["fra-hv01", "fra-hv02", "fra-hv03", "fra-hv04", "fra-gpu01", "dub-hv01", "dub-hv02"]
        assert all(h.data is None and h.is_expanded for h in hosts)
        hv01 = hosts[0]
        assert plain(hv01) == "fra-hv01  10 devices"
        assert labels(hv01.children) == ["IOMMU group 20", "IOMMU group 40"]  # VF groups 21–28 fold into the PF
        (pf,) = hv01.children[0].children
        assert pf.data is not None and pf.data.address == "0000:18:00.0" and pf.is_expanded
        assert "8 VFs · 3 assigned" in plain(pf)
        vfs = [n.data for n in pf.children]
        assert [v.address for v in vfs if v] == [f"0000:18:01.{i}" for i in range(8)]
        assert all(v is not None and v.physfn == "0000:18:00.0" and v.host == "fra-hv01" for v in vfs)
        assert all(not n.allow_expand for n in pf.children)
        assert "8 VFs · 2 assigned" in plain(tree.node_for("fra-hv02", "0000:18:00.0"))
        group80 = next(g for g in hosts[4].children if plain(g).startswith("IOMMU group 80"))
        assert [n.data.address for n in group80.children if n.data] == ["0000:ca:00.0", "0000:ca:00.1"]
        assert tree.cursor_line == 0 and tree.cursor_node is hosts[0]


def test_owner_driver_and_product_on_each_line() -> None:
    tree = DeviceTree()
    long_name = "Extremely Long Product Name That Will Not Fit In Its Column At All"
    tree.show(
        [
            dev("0000:01:00.0", kind=OwnerKind.VM),
            dev("0000:02:00.0", group=2, kind=OwnerKind.VFIO),
            dev("0000:03:00.0", group=3, kind=OwnerKind.UNBOUND, product=long_name),
            dev("0000:04:00.0", group=4, driver="ixgbe", owner=Owner(OwnerKind.HOST, driver="ixgbe")),
        ]
    )
    vm, vfio, unbound, host = (tree.node_for("h1", f"0000:0{i}:00.0") for i in range(1, 5))
    assert "vfio-pci" in plain(vm) and plain(vm).endswith("vm vm-a") and styled(vm, "vm-a", "bold")
    assert plain(vfio).endswith("vfio (free)")
    assert plain(unbound).endswith("unbound") and "—" in plain(unbound)  # no driver at all
    assert long_name not in plain(unbound) and "Extremely Long Product …" in plain(unbound)
    assert plain(host).endswith("host:ixgbe") and "Widget NIC" in plain(host) and "ixgbe " in plain(host)
    assert not styled(host, "host:ixgbe", "bold")


def test_ungrouped_devices_come_last_and_orphan_vfs_stay_in_their_group() -> None:
    tree = DeviceTree()
    tree.show(
        [
            dev("0000:09:00.0", group=None),
            dev("0000:05:01.0", group=7, physfn="0000:05:00.0", product="Widget NIC VF"),
            dev("0000:01:00.0", group=3),
        ]
    )
    (host,) = tree.root.children
    assert labels(host.children) == ["IOMMU group 3", "IOMMU group 7", "no IOMMU group"]
    orphan = host.children[1].children[0]
    assert orphan.data is not None and orphan.data.address == "0000:05:01.0"
    assert "Widget NIC VF" in plain(orphan)  # no PF listed to shorten it against


def test_driver_column_lines_up_across_depths() -> None:
    tree = DeviceTree()
    tree.show(demo_devices())
    vf = tree.node_for("fra-hv01", "0000:18:01.2")
    pf = tree.node_for("fra-hv01", "0000:18:00.0")
    leaf = tree.node_for("fra-hv01", "0000:3b:00.0")
    assert vf and pf and leaf
    assert "Virtual Function" in plain(vf) and "Ethernet" not in plain(vf)  # the PF line names the card
    columns = {
        GUIDE * depth(vf) + plain(vf).index("iavf"),
        GUIDE * depth(pf) + 2 + plain(pf).index("ice"),  # 2: the expand toggle
        GUIDE * depth(leaf) + plain(leaf).index("nvme"),
    }
    assert len(columns) == 1


def test_conflicts_show_on_the_device_and_are_counted_up_the_tree() -> None:
    tree = DeviceTree()
    claim = "claimed by web-03 and web-04"
    tree.show(demo_devices(), {**FLAGS, ("fra-hv02", "0000:18:01.0"): claim})
    gpu_dev = tree.node_for("fra-gpu01", "0000:ca:00.1")
    assert gpu_dev is not None and plain(gpu_dev).endswith(f"⚠ {SPLIT}") and styled(gpu_dev, "⚠", "red")
    assert plain(gpu_dev).startswith("0000:ca:00.1") and "host:snd_hda_intel" in plain(gpu_dev)
    group80 = gpu_dev.parent
    assert group80 is not None and plain(group80) == "IOMMU group 80  ⚠ 2 conflicts"
    assert plain(group80.parent).endswith("⚠ 2 conflicts") and styled(group80.parent, "⚠", "red")
    vf = tree.node_for("fra-hv02", "0000:18:01.0")
    assert vf is not None and plain(vf).endswith(claim)
    assert plain(vf.parent).endswith("⚠ 1 conflict")  # the PF line counts its VFs' conflicts
    clean = tree.node_for("fra-gpu01", "0000:17:00.0")
    assert clean is not None and "⚠" not in plain(clean) and "⚠" not in plain(clean.parent)
    assert "⚠" not in plain(tree.root.children[0])  # fra-hv01 has none


async def test_refresh_keeps_the_cursor_on_its_device_and_collapsed_nodes_collapsed() -> None:
    devices = demo_devices()
    async with TreeApp().run_test(size=(120, 40)) as pilot:
        tree = pilot.app.query_one(DeviceTree)
        tree.show(devices, FLAGS)
        await pilot.pause()
        hv02_pf = tree.node_for("fra-hv02", "0000:18:00.0")
        assert hv02_pf is not None
        hv02_pf.collapse()
        await pilot.pause()
        tree.move_cursor(tree.node_for("fra-gpu01", "0000:ca:00.1"))
        await pilot.pause()
        line_before = tree.cursor_line
        # A new device appears on the first host, above the cursor, and the cursor's owner changes.
        added = dev("0000:05:00.0", host="fra-hv01", group=5, kind=OwnerKind.VFIO)
        changed = [
            replace(d, owner=Owner(OwnerKind.VFIO, driver="vfio-pci"))
            if (d.host, d.address) == ("fra-gpu01", "0000:ca:00.1")
            else d
            for d in devices
        ]
        tree.show([added, *changed], {})
        await pilot.pause()
        assert key(tree) == ("dev", "fra-gpu01", "0000:ca:00.1")
        node = tree.cursor_node
        assert node is not None and node.data is not None and node.data.owner.kind is OwnerKind.VFIO
        assert plain(node).endswith("vfio (free)")  # the node is the new one, flag gone
        assert tree.cursor_line == line_before + 2  # group 5 and its device sit above it now
        new_pf = tree.node_for("fra-hv02", "0000:18:00.0")
        assert new_pf is not None and new_pf is not hv02_pf and new_pf.is_collapsed
        other_pf = tree.node_for("fra-hv01", "0000:18:00.0")
        assert other_pf is not None and other_pf.is_expanded
        assert new_pf.parent is not None and new_pf.parent.is_expanded
        new_group = tree.node_by_key(("group", "fra-hv01", "5"))
        assert new_group is not None and new_group.is_expanded


async def test_cursor_falls_back_to_the_group_when_its_device_goes() -> None:
    devices = demo_devices()
    async with TreeApp().run_test(size=(120, 40)) as pilot:
        tree = pilot.app.query_one(DeviceTree)
        tree.show(devices)
        tree.move_cursor(tree.node_for("fra-gpu01", "0000:ca:00.1"))
        await pilot.pause()
        tree.show([d for d in devices if (d.host, d.address) != ("fra-gpu01", "0000:ca:00.1")])
        await pilot.pause()
        assert key(tree) == ("group", "fra-gpu01", "80")
        # A device inside a collapsed branch cannot hold the cursor: its visible ancestor does.
        tree.move_cursor(tree.node_for("fra-hv01", "0000:18:01.3"))
        await pilot.pause()
        assert key(tree) == ("dev", "fra-hv01", "0000:18:01.3")
        pf = tree.node_for("fra-hv01", "0000:18:00.0")
        assert pf is not None
        pf.collapse()
        tree.show(devices)
        await pilot.pause()
        assert key(tree) == ("dev", "fra-hv01", "0000:18:00.0")


async def test_vim_keys_move_the_cursor() -> None:
    async with TreeApp().run_test(size=(120, 40)) as pilot:
        tree = pilot.app.query_one(DeviceTree)
        tree.show(demo_devices())
        tree.focus()
        await pilot.pause()
        await pilot.press("j", "j")
        assert key(tree) == ("dev", "fra-hv01", "0000:18:00.0")
        await pilot.press("j")
        assert key(tree) == ("dev", "fra-hv01", "0000:18:01.0")
        await pilot.press("k", "k")
        assert key(tree) == ("group", "fra-hv01", "20")
        await pilot.press("G")
        assert key(tree) == ("dev", "dub-hv02", "0000:41:00.0")
        await pilot.press("g")
        assert key(tree) == ("host", "fra-hv01")


async def test_h_and_l_fold_and_unfold_like_vim() -> None:
    app = TreeApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tree = app.query_one(DeviceTree)
        tree.show(demo_devices(), FLAGS)
        await pilot.pause()
        tree.move_cursor(tree.node_for("fra-hv01", "0000:18:00.0"))
        pf = tree.cursor_node
        assert pf is not None and pf.is_expanded
        await pilot.press("h")
        assert pf.is_collapsed
        await pilot.press("h")
        assert tree.cursor_node is pf.parent  # already folded: step out
        await pilot.press("j", "l")
        assert tree.cursor_node is pf and pf.is_expanded
