"""Showing a source without its secrets: one redaction for every place a URL can appear.

A git URL may carry credentials (``https://user:TOKEN@host/repo``, or a bare token as the user,
``https://ghp_xxx@github.com/repo``). bpfman talks to git with the URL as given and nothing
else: every message, plan header, JSON document, saved plan, state record, lock file and log
line gets :func:`redact`'s text instead. A password is always replaced; a bare user part is
replaced too except over ssh, where it is a login name (``ssh://git@host/repo``; the scp-like
``git@host:repo`` has no scheme and is never touched).

    redact("cannot clone https://me:s3cret@host/r.git")  # 'cannot clone https://me:***@host/r.git'
    shown("https://ghp_1@github.com/o/r")                 # 'https://***@github.com/o/r'

:func:`shown` also makes a text safe for a terminal: control characters (escape sequences,
newlines in a name, bidi overrides) are written as ``\\xNN``/``\\uNNNN`` instead of sent raw.
"""

from __future__ import annotations

import logging
import re
import unicodedata

MASK = "***"

# scheme://userinfo@ : the userinfo runs to the LAST '@' before the host's end ('/' or space),
# so a raw '@' inside a password cannot leave its tail shown. Over-redacting is harmless.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")
# Over ssh the user part names an account, not a secret.
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}


def _mask(m: re.Match[str]) -> str:
    scheme, userinfo = m.group("scheme"), m.group("userinfo")
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{scheme}{user}:{MASK}@" if user and "@" not in user else f"{scheme}{MASK}@"
    if scheme[:-3].lower() in _SSH_SCHEMES and "@" not in user:
        return m.group(0)
    return f"{scheme}{MASK}@"


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(_mask, text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control and format characters (C0, DEL, C1, bidi controls, zero-width
    marks) escaped, so that it shows what it is and cannot act on a terminal."""
    if text.isprintable():
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )


def shown(text: str) -> str:
    """``text`` as it may be shown or stored: credentials redacted, control characters escaped."""
    return visible(redact(text))


class RedactingFilter(logging.Filter):
    """A handler filter: every log record leaves with the credentials in its URLs redacted,
    whichever logger (ours, or a library's) wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
