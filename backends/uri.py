"""libvirt URIs as people see them: credentials are never shown or logged."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^([a-z0-9+.-]+://)([^@/]*)@", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"([?&](?:password|passwd|pkipath_password)=)[^&]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """Hide any password in a URI: ``user:secret@host`` → ``user:***@host``, ``?password=…``."""

    def hide(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}{':***' if sep else ''}@"

    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(hide, uri))
