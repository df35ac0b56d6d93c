"""libvirt URIs as people see them: credentials are never shown or logged."""

from __future__ import annotations

import re

# Anywhere in a text (libvirt's error messages quote the URI they failed on), not only at its start.
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/\s'\"]*)@", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"([?&](?:password|passwd|pkipath_password)=)[^&\s'\"]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """Hide any password in a URI, or in every URI in a text: ``user:secret@host`` → ``user:***@host``,
    ``?password=…`` → ``?password=***``."""

    def hide(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}{':***' if sep else ''}@"

    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(hide, uri))
