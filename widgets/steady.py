"""A Static laid out again only when its height changes."""

from __future__ import annotations

from collections.abc import Hashable

from textual.visual import VisualType
from textual.widgets import Static


class SteadyStatic(Static):
    """``set_content`` redraws the widget alone while its height stays: a layout pass arranges and
    redraws the whole screen (10–65 ms beside a table of 10,000 rows), and most updates keep the
    height (the cursor reaching the next VM, a replica's lag ticking)."""

    _measured: tuple[Hashable, int] | None = None  # the shape and width last measured

    def set_content(self, content: VisualType, shape: Hashable | None = None) -> None:
        """``shape``: what the content's height depends on, when the caller knows it; the same shape
        at the same width is not measured again (measuring renders the content: a chain ~5 ms)."""
        self.update(content, layout=False)
        width = self.size.width
        if shape is not None and (shape, width) == self._measured:
            return
        self._measured = None if shape is None else (shape, width)
        if not width or self.height_for(width) != self.size.height:
            self.refresh(layout=True)

    def height_for(self, width: int) -> int:
        """The height the content now shown takes at ``width``."""
        return self.get_content_height(self.size, self.size, width)
