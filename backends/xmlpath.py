"""``find``/``findall`` over a path of plain tags, answered by ElementTree's C accelerator.

``Element.find("a/b")`` hands any path to ``xml.etree.ElementPath`` (Python: a cache lookup and a
chain of generators per call); a single plain tag, namespaced or not, the C code answers itself.
Walking the path one tag at a time finds the same elements in the same order, three to four
times faster: at 2,000 domains, a first load asks some 20,000 such paths.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def findall(el: ET.Element, *tags: str) -> list[ET.Element]:
    """What ``el.findall("/".join(tags))`` finds, for plain tags (``{namespace}tag`` included)."""
    found = [el]
    for tag in tags:
        found = [child for parent in found for child in parent.findall(tag)]
    return found


def find(el: ET.Element, *tags: str) -> ET.Element | None:
    """What ``el.find("/".join(tags))`` finds: the first match in document order, or None."""
    *outer, last = tags
    for parent in findall(el, *outer) if outer else (el,):
        child = parent.find(last)
        if child is not None:
            return child
    return None
