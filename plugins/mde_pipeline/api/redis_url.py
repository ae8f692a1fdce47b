"""A Redis ledger URL (extra ``rate_limit_ledger``), parsed once, the same way everywhere.

``redis[s]://[[user]:password@]host[:port][/db][?query]``. Generated passwords often hold
``/``, ``#``, ``?``, ``@`` or ``%`` unencoded. urllib (and so redis-py) ends the
authority at the first ``/``, ``?`` or ``#``: such a password is cut in two, one part
read as the host, the other as path or fragment, and both then show up in messages
("Error connecting to <half the password>:6379"). So the ledger, the status report and
ledger_admin never hand the configured text to urllib or redis-py: they parse it here,
with the user info ending at the **last** ``@`` (a host, port or db never holds one),
and give redis-py :attr:`RedisUrl.normalised`, the same URL with the password
percent-encoded. ``%XX`` in a password is read as an encoding (RFC 3986): a literal
``%`` followed by two hex digits must be written ``%25``. An ``@`` inside the query
string must be percent-encoded.

Nothing here echoes a password: :attr:`RedisUrl.display` and every error name the
scheme, host, port and db only; :meth:`RedisUrl.secrets` lists every form the password
can take (as written, decoded, re-encoded) so that redaction and Airflow's masker know
them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

REDIS_SCHEMES = ("redis", "rediss")
SETTING = "extra rate_limit_ledger"


def is_redis_url(value: str) -> bool:
    return "://" in value and value.split("://", 1)[0].strip().lower() in REDIS_SCHEMES


@dataclass(frozen=True)
class RedisUrl:
    scheme: str
    netloc: str  # host[:port] as written (IPv6 in brackets), never user info
    host: str
    port: int | None
    path: str
    query: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)  # decoded
    _written_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def display(self) -> str:
        """The URL for messages and the status page: user info as ``***``, no query."""
        userinfo = "***@" if self.username is not None or self.password is not None else ""
        return f"{self.scheme}://{userinfo}{self.netloc}{self.path}"

    @property
    def normalised(self) -> str:
        """The URL for redis-py: user name and password percent-encoded."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{userinfo}{self.netloc}{self.path}{query}"

    def secrets(self) -> tuple[str, ...]:
        """Every form of every secret the URL holds (password as written, decoded and
        encoded; a ``password=`` query value; user info without ``:``, likely a password)."""
        values = list(self._written_secrets)
        if self.password:
            values += [self.password, quote(self.password, safe="")]
        for key, value in parse_qsl(self.query, keep_blank_values=False):
            if key.lower() == "password":
                values += [value, quote(value, safe="")]
        return tuple(dict.fromkeys(v for v in values if v))


def _error(scheme: str, netloc: str, problem: str) -> ValueError:
    where = f"{scheme}://***@{netloc}" if netloc else f"{scheme}://..."
    return ValueError(f"{SETTING}: Redis URL {where} {problem}")


def parse_redis_url(text: str) -> RedisUrl:
    """The parts of a ``redis://`` / ``rediss://`` URL; ValueError (naming scheme, host and
    port, never the password) when it names no host or a bad port."""
    scheme, _, rest = text.strip().partition("://")
    scheme = scheme.strip().lower()
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"{SETTING}: not a redis:// or rediss:// URL")
    userinfo, at, hostpart = rest.rpartition("@")
    # The authority after the user info ends at the first '/', '?' or '#'.
    cut = min((i for i in (hostpart.find(c) for c in "/?#") if i >= 0), default=len(hostpart))
    netloc = hostpart[:cut]
    parts = urlsplit(f"{scheme}://{hostpart}")
    try:
        port = parts.port
    except ValueError:
        raise _error(scheme, netloc, "has a port that is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise _error(scheme, netloc, "names no Redis host (a password with '/', '?' or '#' is read "
                     "up to the last '@'; percent-encode an '@' in the query)")
    username = password = None
    written: tuple[str, ...] = ()
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if (user or colon) else None
        if colon:
            password = unquote(secret)
            written = (secret,)
        else:  # "redis://secret@host": redis-py reads a user name; it is most likely a password
            written = (user, unquote(user))
    return RedisUrl(scheme=scheme, netloc=netloc, host=parts.hostname, port=port, path=parts.path,
                    query=parts.query, username=username, password=password, _written_secrets=written)  # fmt: skip
