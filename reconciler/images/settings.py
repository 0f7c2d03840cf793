"""How this host reaches registries: the ``images:`` section of the host config.

::

    images:
      cache_dir: /var/lib/bpfman/images      # default: <state-dir>/images
      auth_file: /etc/bpfman/auth.json       # docker config.json format; default: none
      ca_bundle: /etc/bpfman/registry-ca.pem # PEM CAs trusted besides the system's
      insecure_registries: [127.0.0.1:5000]  # plain HTTP, only these
      mirrors:                               # pull quay.io/... from registry.internal:5000
        quay.io: registry.internal:5000
      pull_secrets_dir: /etc/bpfman/pull-secrets  # imagepullsecret {name: regcred}: regcred.json
      timeout: 30                            # seconds a registry may take to connect or answer
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from dataclasses import field
from pathlib import Path

from reconciler import files
from reconciler.images.errors import ImageError
from reconciler.images.keyless import Identity
from reconciler.values import frozen

MAX_AUTH_FILE = 1024 * 1024
DEFAULT_PULL_SECRETS_DIR = Path("/etc/bpfman/pull-secrets")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@frozen
class RegistrySettings:
    cache_dir: Path | None = None
    auth_file: Path | None = None
    ca_bundle: Path | None = None
    insecure_registries: tuple[str, ...] = ()
    mirrors: dict[str, str] = field(default_factory=dict)
    pull_secrets_dir: Path = DEFAULT_PULL_SECRETS_DIR
    timeout: float | None = None  # seconds per connect and per read; None: remote's default
    # The signing: section: refuse images without a valid signature by one of these keys or
    # (keyless) identities, the latter verified against the trusted root.
    require_signature: bool = False
    signing_keys: tuple[Path, ...] = ()
    signing_identities: tuple[Identity, ...] = ()
    trusted_root: Path | None = None

    def with_secret(self, name: str) -> RegistrySettings:
        """These settings with the credentials of the pull secret ``name`` (a manifest's
        imagepullsecret): the docker config.json file ``<pull_secrets_dir>/<name>.json``."""
        if not _SECRET_NAME.fullmatch(name):
            raise ImageError(f"pull secret name {name!r} is not a lowercase name, e.g. regcred")
        path = self.pull_secrets_dir / f"{name}.json"
        if not path.is_file():
            raise ImageError(
                f"pull secret {name!r}: no file {path}; write the registry credentials there "
                "(docker config.json format), or set images.pull_secrets_dir in the host config"
            )
        return dataclasses.replace(self, auth_file=path)

    def endpoint(self, registry: str) -> str:
        """The host[:port] to contact for images named under ``registry``."""
        from reconciler.images.reference import DOCKER_HUB, DOCKER_HUB_API

        mirrored = self.mirrors.get(registry)
        if mirrored is not None:
            return mirrored
        return DOCKER_HUB_API if registry == DOCKER_HUB else registry

    def insecure(self, host: str) -> bool:
        return host in self.insecure_registries

    def credentials(self, registry: str, host: str) -> tuple[str, str] | None:
        """(user, password) for ``host`` (the endpoint, e.g. a mirror) or else ``registry`` from
        the auth file, or None. The file is docker's config.json: ``auths`` entries with ``auth``
        (base64 of user:password) or ``username`` and ``password``."""
        if self.auth_file is None:
            return None
        where = f"the registry auth file {self.auth_file}"
        try:
            raw = files.read_regular(self.auth_file, MAX_AUTH_FILE)
            doc = json.loads(raw)
        except FileNotFoundError:
            raise ImageError(
                f"{where} does not exist; fix images.auth_file in the host config"
            ) from None
        except (OSError, files.NotReadable, ValueError) as e:
            raise ImageError(f"cannot read {where}: {e}") from None
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            return None
        for key in (host, registry, f"https://{host}", f"http://{host}"):
            entry = auths.get(key)
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("auth"), str) and entry["auth"]:
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ImageError(
                        f"{where}: the auth of {key!r} is not base64 of user:password"
                    ) from None
                return user, password
            if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                return entry["username"], entry["password"]
        return None
