"""Secrets out of what is printed, logged, tagged or stored: a tracking URI may carry a password
(``http://user:secret@host/``, ``postgresql://mlflow:secret@127.0.0.1/mlflow``). Every place that shows a URI
shows :func:`redact_uri` of it; :func:`redact_text` masks every URI inside a message (an exception's text)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://user:password@  (the password part is what is masked; a user alone is kept)
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^@\s/]*)(?P<at>@)")
_SECRET_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|token|secret|access_token)=)[^&\s]*", re.I)


def redact_uri(uri: str) -> str:
    """``uri`` with any password (user-info or a password/token query field) replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:{MASK}@{host}"
        uri = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return _SECRET_QUERY.sub(lambda match: match["head"] + MASK, uri)


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it masked."""
    masked = _CREDENTIALS.sub(lambda match: match["head"] + MASK + match["at"], text)
    return _SECRET_QUERY.sub(lambda match: match["head"] + MASK, masked)
