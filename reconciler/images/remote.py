"""A registry, through oras-py, checked byte by byte.

oras gives the distribution protocol and its auth flows (bearer tokens, basic); it does not check
what it downloads. Here every manifest is read with a size bound and its digest computed over
the exact bytes served; a manifest asked for by digest must have that digest, and one asked for
by tag must match the ``Docker-Content-Digest`` the registry sends. Blobs are streamed into the
store's temporary file with the size bound the manifest gives, hashed as they come, and kept only
when size and digest both match.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from reconciler.images import content
from reconciler.images.content import Descriptor
from reconciler.images.errors import ImageError, NotFound
from reconciler.images.settings import RegistrySettings
from reconciler.images.store import Store

if TYPE_CHECKING:
    from pathlib import Path

    import requests

_CHUNK = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0


class Remote:
    """One registry (or its mirror), for the repository names of one reference's registry."""

    def __init__(self, settings: RegistrySettings, registry: str) -> None:
        self.registry = registry
        self.host = settings.endpoint(registry)
        self.insecure = settings.insecure(self.host)
        self.scheme = "http" if self.insecure else "https"
        self.verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else True
        self.credentials = settings.credentials(registry, self.host)
        # Per connect and per read: a registry that accepts and never answers fails a plan
        # (and the watcher's reconcile) instead of hanging it. oras sets no timeout itself.
        self.timeout = settings.timeout or DEFAULT_TIMEOUT_S
        self._client: Any = None
        # A registry that could not be reached is not asked again by this Remote: a plan of
        # many manifests naming it fails each at once instead of waiting out a timeout each.
        self._unreachable: str | None = None
        self.via = "" if self.host == registry else f" (through {self.host})"

    def _where(self, repository: str) -> str:
        return f"{self.registry}/{repository}{self.via}"

    def client(self) -> Any:
        """The oras client, its auth backend picked from the registry's own challenge: bearer
        tokens (the common case) or basic auth (a plain htpasswd registry)."""
        if self._client is not None:
            return self._client
        import oras.provider  # only when a registry is contacted: oras imports requests

        backend = "token"
        probe = self._request_raw(f"{self.scheme}://{self.host}/v2/")
        challenge = probe.headers.get("Www-Authenticate", "")
        probe.close()
        if probe.status_code == 401 and challenge.lower().startswith("basic"):
            if self.credentials is None:
                raise ImageError(
                    f"registry {self.host} asks for a user and password; add them for "
                    f"{self.host} to the auth file (images.auth_file in the host config)"
                )
            backend = "basic"
        client = oras.provider.Registry(
            hostname=self.host, insecure=self.insecure, tls_verify=self.verify, auth_backend=backend
        )
        if self.credentials is not None:
            client.auth.set_basic_auth(*self.credentials)
        adapter = _timeout_adapter(self.timeout)
        client.session.mount("http://", adapter)
        client.session.mount("https://", adapter)
        self._client = client
        return client

    def _request_raw(self, url: str) -> requests.Response:
        import requests

        if self._unreachable is not None:
            raise ImageError(self._unreachable)
        try:
            # Through the adapter oras's session gets too: its timeout and its one resend.
            with requests.Session() as session:
                session.mount("http://", _timeout_adapter(self.timeout))
                session.mount("https://", _timeout_adapter(self.timeout))
                return session.get(url, verify=self.verify)
        except requests.exceptions.SSLError as e:
            raise ImageError(
                f"registry {self.host}: TLS verification failed ({_short(e)}); if it uses a "
                "private CA, set images.ca_bundle in the host config; plain HTTP only for a "
                "registry listed in images.insecure_registries"
            ) from None
        except requests.RequestException as e:
            self._unreachable = (
                f"cannot reach registry {self.host}: {_why(e)}; check the network, or name a "
                "registry this host can reach for it (images.mirrors in the host config)"
            )
            raise ImageError(self._unreachable) from None

    def _request(self, url: str, method: str, **kwargs: Any) -> requests.Response:
        """oras's request, with its auth retry; and once more with a new token when the one it
        holds does not cover this request (oras keeps the first token it got, e.g. one for
        pulling, and offers it again for a push)."""
        client = self.client()
        # Without oras's retry decorator: it retries every error five times, sleeping up to 83 s
        # between tries, so a wrong password or a registry that went away would hang a plan for
        # minutes. A plan reports the error at once; the watcher retries with its own backoff.
        do_request = type(client).do_request.__wrapped__
        headers = dict(kwargs.pop("headers", None) or {})

        def once() -> requests.Response:
            try:
                return do_request(client, url, method, headers=dict(headers), **kwargs)
            except ValueError as e:  # oras: the token flow was refused
                raise ImageError(
                    f"registry {self.host} refused to authenticate this request ({e}); check "
                    f"the credentials for {self.host} in the auth file (images.auth_file)"
                ) from None

        response = once()
        if response.status_code in (401, 403) and getattr(client.auth, "token", None):
            response.close()
            client.auth.token = None
            response = once()
        return response

    def _get(self, url: str, headers: dict[str, str], where: str) -> requests.Response:
        import requests

        self.client()
        try:
            response = self._request(url, "GET", headers=dict(headers), stream=True)
        except requests.exceptions.SSLError as e:
            raise ImageError(f"{where}: TLS verification failed ({_short(e)})") from None
        except (requests.RequestException, ValueError) as e:
            raise ImageError(f"{where}: cannot fetch from {self.host}: {_short(e)}") from None
        if response.status_code in (401, 403):
            response.close()
            raise ImageError(
                f"{where}: the registry refused access ({response.status_code}); check the "
                f"credentials for {self.host} in the auth file (images.auth_file)"
            )
        if response.status_code == 404:
            response.close()
            raise NotFound(f"{where}: not found on {self.host}")
        if response.status_code != 200:
            response.close()
            raise ImageError(f"{where}: {self.host} answered HTTP {response.status_code}")
        return response

    def manifest(self, repository: str, lookup: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of the manifest or index ``lookup`` (a tag or digest)."""
        where = (
            f"{self._where(repository)}:{lookup}"
            if ":" not in lookup
            else (f"{self._where(repository)}@{lookup}")
        )
        url = f"{self.scheme}://{self.host}/v2/{repository}/manifests/{lookup}"
        response = self._get(url, {"Accept": content.ACCEPT}, where)
        with response:
            data = _read_bounded(response, content.MAX_MANIFEST, where, "manifest")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            served = response.headers.get("Docker-Content-Digest")
        digest = content.digest_of(data)
        if lookup.startswith("sha256:") and digest != lookup:
            raise ImageError(
                f"{where}: the registry sent a manifest whose digest is {digest}, not the one "
                "asked for; refusing it"
            )
        if served is not None and served != digest:
            raise ImageError(
                f"{where}: the registry says the manifest is {served} but its content is "
                f"{digest}; refusing it"
            )
        return data, media_type, digest

    def referrers(self, repository: str, digest: str) -> bytes | None:
        """The index of artifacts whose subject is ``digest``, from the referrers API; None when
        the registry has no such API (the caller falls back to the referrers tag)."""
        where = f"{self._where(repository)}@{digest}'s referrers"
        url = f"{self.scheme}://{self.host}/v2/{repository}/referrers/{digest}"
        try:
            response = self._get(url, {"Accept": content.OCI_INDEX}, where)
        except NotFound:
            return None
        with response:
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if media_type != content.OCI_INDEX:
                return None  # not the referrers API: some registries answer anything with 200
            return _read_bounded(response, content.MAX_MANIFEST, where, "list of referrers")

    def blob(self, repository: str, want: Descriptor, store: Store, limit: int) -> Path:
        """Download ``want`` into the store (checked), returning its path there."""
        where = f"{self._where(repository)}@{want.digest}"
        if want.size > limit:
            raise ImageError(
                f"{where}: {want.size} bytes, over the {limit} byte bound for this part of a "
                "bytecode image"
            )
        url = f"{self.scheme}://{self.host}/v2/{repository}/blobs/{want.digest}"
        response = self._get(url, {}, where)
        fd, tmp = store.temporary()
        try:
            h, size = hashlib.sha256(), 0
            with response, os.fdopen(fd, "wb") as f:
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > want.size:
                        raise ImageError(
                            f"{where}: the registry sent more than the {want.size} bytes the "
                            "manifest gives; refusing it"
                        )
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if size != want.size:
                raise ImageError(
                    f"{where}: the download ended after {size} of {want.size} bytes; nothing kept"
                )
            if "sha256:" + h.hexdigest() != want.digest:
                raise ImageError(
                    f"{where}: the content does not match its digest; refusing it (nothing kept)"
                )
            return store.commit(tmp, want.digest)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, ImageError):
                raise
            import requests

            if isinstance(e, requests.RequestException):
                raise ImageError(f"{where}: the download failed: {_short(e)}") from None
            raise

    def push_blob(self, repository: str, data: bytes, digest: str) -> None:
        self.client()
        base = f"{self.scheme}://{self.host}/v2/{repository}/blobs"
        head = self._request(f"{base}/{digest}", "HEAD")
        if head.status_code == 200:
            return
        start = self._request(f"{base}/uploads/", "POST")
        if start.status_code != 202 or "Location" not in start.headers:
            raise ImageError(
                f"{self._where(repository)}: cannot start an upload (HTTP {start.status_code})"
            )
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"{self.scheme}://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        put = self._request(
            f"{location}{sep}digest={digest}",
            "PUT",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if put.status_code != 201:
            raise ImageError(
                f"{self._where(repository)}: upload of {digest} failed (HTTP {put.status_code})"
            )

    def push_manifest(self, repository: str, tag: str, data: bytes, media_type: str) -> None:
        self.client()
        url = f"{self.scheme}://{self.host}/v2/{repository}/manifests/{tag}"
        put = self._request(url, "PUT", data=data, headers={"Content-Type": media_type})
        if put.status_code != 201:
            raise ImageError(
                f"{self._where(repository)}:{tag}: the registry refused the manifest "
                f"(HTTP {put.status_code}: {put.text[:200]})"
            )


def _read_bounded(response: requests.Response, limit: int, where: str, what: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ImageError(f"{where}: the {what} is over {limit} bytes; refusing it")
        chunks.append(chunk)
    return b"".join(chunks)


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) <= 300 else text[:300] + "..."


def _timeout_adapter_class() -> Any:
    import requests.adapters

    class TimeoutAdapter(requests.adapters.HTTPAdapter):
        """oras's session with a timeout on every request it makes."""

        def __init__(self, timeout: float) -> None:
            super().__init__()
            self.timeout = timeout

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = self.timeout
            try:
                return super().send(request, **kwargs)
            except requests.exceptions.ConnectionError as e:
                # A kept-alive connection that the registry (or a proxy or load balancer before
                # it) closed while idle fails the next request sent on it with a reset. HTTP
                # clients send an idempotent request once more, on a new connection; a refusal
                # or a timeout is not retried (the error is said at once, as before).
                if request.method not in ("GET", "HEAD") or not was_reset(e):
                    raise
                return super().send(request, **kwargs)

    return TimeoutAdapter


def was_reset(e: BaseException) -> bool:
    """Whether the connection under ``e`` (requests wraps urllib3, which wraps the socket's
    error) was reset or closed by the other end, rather than refused or timed out."""
    # http.client.RemoteDisconnected (closed before any answer) is a ConnectionResetError.
    kinds = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
    seen: set[int] = set()
    todo: list[object] = [e]
    while todo:
        x = todo.pop()
        if not isinstance(x, BaseException) or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, kinds):
            return True
        todo.extend([x.__cause__, x.__context__, getattr(x, "reason", None), *x.args])
    return False


def _timeout_adapter(timeout: float) -> Any:
    """Made when oras (and so requests) is imported, not when this module is."""
    return _timeout_adapter_class()(timeout)


def _why(e: BaseException) -> str:
    """The root cause of a connection failure in a few words (requests wraps urllib3's reason
    in two layers of retry and pool text)."""
    reason: BaseException = e
    for _ in range(8):  # a chain of causes, never followed round a cycle
        inner = getattr(reason, "reason", None)
        nxt = inner if isinstance(inner, BaseException) else reason.__context__
        if nxt is None or nxt is reason:
            break
        reason = nxt
    text = " ".join(str(reason).split())
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "its name does not resolve"
    if "Connection refused" in text:
        return "the connection was refused"
    if "timed out" in text.lower():
        return "it did not answer in time"
    return _short(reason)
