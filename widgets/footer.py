"""Textual's footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Textual's ``Footer`` rebuilds every key after each binding change (a focus move is one):
    a view's start makes three, ~0.05 s each before the console's first frame, and most change
    nothing shown. Here changes queue one rebuild, which reads the bindings when it runs and is
    skipped when they show what is already built."""

    _rebuild_queued = False
    _built: Any = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._rebuild_queued:
            self._rebuild_queued = True
            self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_queued = False  # a change from here on queues another rebuild
        if not self.is_attached:  # its view was closed meanwhile
            return
        shown = self._shown()
        if shown != self._built:
            self._built = shown
            await self.recompose()

    def _shown(self) -> tuple[object, ...]:
        """Everything ``Footer.compose`` reads: the shown bindings and the command palette's."""
        app = self.app
        return (self.show_command_palette, app.ENABLE_COMMAND_PALETTE, app.COMMAND_PALETTE_BINDING, *(
            (key, binding.key, app.get_key_display(binding), binding.description, binding.action,
             binding.group, binding.tooltip, enabled, tooltip)
            for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == app.COMMAND_PALETTE_BINDING
        ))
