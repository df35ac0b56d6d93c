"""The `:` command palette, fed by the action registry (global actions and the view's own)."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

from console.actions import ACTIONS, key_label


class ActionCommands(Provider):
    def _available(self) -> list[tuple[str, str, str]]:
        scope = getattr(self.screen, "SCOPE", "app")
        keymap = getattr(self.app, "keymap", {})
        return [
            (a.id, a.description, key_label(a, keymap))
            for a in ACTIONS if a.scope in ("app", scope) and a.id != "command"
        ]

    async def discover(self) -> Hits:
        for action_id, text, keys in self._available():
            yield Hit(1.0, f"{text}  ({keys})", partial(self._run, action_id), text=text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action_id, text, keys in self._available():
            score = max(matcher.match(text), matcher.match(action_id.replace("_", " ")))
            if score > 0:
                yield Hit(score, matcher.highlight(f"{text}  ({keys})"), partial(self._run, action_id), text=text)

    async def _run(self, action_id: str) -> None:
        screen = self.screen
        target = screen if hasattr(screen, f"action_{action_id}") else self.app
        await target.run_action(action_id)
