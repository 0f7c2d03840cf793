"""Real OCI registries for the image tests: Debian's docker-registry (distribution 2.8).

Each `Registry` is our own process on a free loopback port with its own config, filesystem storage
and log in a private directory, never the package's system-wide service on :5000. It serves plain
HTTP, or TLS with a private test CA, optionally behind htpasswd basic auth. Blobs are stored
unverified on disk (`blob_path`), so tests can tamper with what the registry serves.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REGISTRY_BIN = Path("/usr/bin/docker-registry")
HTPASSWD_BIN = Path("/usr/bin/htpasswd")
# The Debian package of each tool, installed by scripts/install-deps.sh.
PACKAGES = {REGISTRY_BIN: "docker-registry", HTPASSWD_BIN: "apache2-utils"}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

START_TIMEOUT = 20.0
HOST = "127.0.0.1"


class RegistryError(Exception):
    pass


def missing_tools() -> str | None:
    """Why the registry cannot run here (after trying to install it as root), or None if it can."""
    missing = sorted({pkg for path, pkg in PACKAGES.items() if not os.access(path, os.X_OK)})
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"missing Debian packages {' '.join(missing)} (run scripts/install-deps.sh as root)"
    # install-deps.sh installs these; this covers a test run on a host where it has not run since
    # the image tests were added. The policy keeps the package's postinst from starting the
    # system-wide service on :5000 (see install-deps.sh).
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    try:
        if own_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        output = (proc.stderr or proc.stdout).strip()
    except OSError as e:  # no apt-get: not Debian
        output = str(e)
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    if "docker-registry" in missing and os.access(REGISTRY_BIN, os.X_OK):
        for argv in (
            ["/etc/init.d/docker-registry", "stop"],
            ["update-rc.d", "docker-registry", "disable"],
        ):
            subprocess.run(argv, capture_output=True, check=False)
    still = sorted({pkg for path, pkg in PACKAGES.items() if not os.access(path, os.X_OK)})
    if still:
        detail = (output.splitlines() or ["no output"])[-1]
        return f"Debian packages {' '.join(still)} missing and apt-get install failed: {detail}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    # Back-dated so a clock a little behind the registry's (same host, but Go vs OpenSSL) is fine.
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    # P-256: key generation is instant, unlike RSA.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bpfman test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # The key identifiers and key usages are what OpenSSL's strict mode (Python 3.13's default
    # VERIFY_X509_STRICT) insists on; Go and older OpenSSL do not care.
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def write_htpasswd(path: Path, username: str, password: str) -> None:
    # distribution only accepts bcrypt. Cost 4, the minimum: the registry checks the hash on every
    # request, without a cache.
    subprocess.run(
        [str(HTPASSWD_BIN), "-B", "-C", "4", "-i", "-c", str(path), username],
        input=password,
        text=True,
        capture_output=True,
        check=True,
    )


def _die_with_parent() -> None:
    # If pytest is SIGKILLed, no fixture teardown runs; the kernel still kills the registry.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Registry:
    """One running docker-registry. Start with `Registry.start`; always `stop()` (or use `with`).

    `host` is "127.0.0.1:PORT" and `url` "http(s)://host"; `storage` is the storage root (blobs
    under docker/registry/v2/blobs/sha256/xx/<hex>/data, see `blob_path`); `ca_file`, `username`
    and `password` are None unless started with tls/auth; `log_file` holds the registry's log.
    """

    host: str
    url: str
    storage: Path
    ca_file: Path | None
    username: str | None
    password: str | None
    log_file: Path
    config_file: Path

    def __init__(
        self, directory: Path, *, tls: bool, auth: bool, token: dict | None = None
    ) -> None:
        self.directory = directory
        self._token = token  # the registry's auth.token section: bearer tokens from a server
        self.storage = directory / "storage"
        self.log_file = directory / "registry.log"
        self.config_file = directory / "config.yml"
        self.ca_file = None
        self.username = self.password = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tls: tuple[Path, Path] | None = None
        self._htpasswd: Path | None = None
        if tls:
            self.ca_file, cert, key = make_test_ca(directory / "tls")
            self._tls = (cert, key)
        if auth:
            self.username, self.password = "bpfman", secrets.token_urlsafe(16)
            self._htpasswd = directory / "htpasswd"
            write_htpasswd(self._htpasswd, self.username, self.password)
        self.host = ""
        self.url = ""

    @classmethod
    def start(
        cls, directory: Path, *, tls: bool = False, auth: bool = False, token: dict | None = None
    ) -> Registry:
        """Start a registry whose files all live in `directory` (created; left for the caller).
        ``token`` is an ``auth.token`` section (realm, service, issuer, rootcertbundle): the
        registry then wants bearer tokens from that token server."""
        directory.mkdir(parents=True, exist_ok=True)
        reg = cls(directory, tls=tls, auth=auth, token=token)
        try:
            reg._start()
        except BaseException:
            reg.stop()
            raise
        return reg

    def _config(self, port: int) -> dict:
        http_cfg: dict = {
            "addr": f"{HOST}:{port}",
            "net": "tcp",
            # Without one it logs a warning and makes up a random secret anyway.
            "secret": secrets.token_hex(16),
        }
        if self._tls:
            http_cfg["tls"] = {"certificate": str(self._tls[0]), "key": str(self._tls[1])}
        config: dict = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                # On by default: a background purge of old uploads, nothing a test wants.
                "maintenance": {"uploadpurging": {"enabled": False}},
                # No `cache` section: a blob descriptor cache would hide blobs that tests delete
                # or replace on disk. No notifications, redis, proxy, health or debug sections
                # either: nothing reaches the network and no background checks run.
            },
            "http": http_cfg,
        }
        if self._htpasswd:
            config["auth"] = {"htpasswd": {"realm": "bpfman-test", "path": str(self._htpasswd)}}
        if self._token:
            config["auth"] = {"token": self._token}
        return config

    def _start(self) -> None:
        # A free port can be taken between our probe and the registry's bind; then it exits with
        # "address already in use" and we try another.
        for _ in range(5):
            port = free_port()
            self.host = f"{HOST}:{port}"
            self.url = f"{'https' if self._tls else 'http'}://{self.host}"
            # YAML is a superset of JSON, and json quotes "0.1" as the string the parser wants.
            self.config_file.write_text(json.dumps(self._config(port), indent=2) + "\n")
            # REGISTRY_* variables override the config file; none of the caller's may leak in.
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with open(self.log_file, "ab") as log:
                log.write(f"--- starting on {self.host}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    [str(REGISTRY_BIN), "serve", str(self.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    env=env,
                    # Out of the terminal's process group: Ctrl-C reaches pytest, whose teardown
                    # then stops the registry.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_ready():
                return
        raise RegistryError(f"docker-registry found no free port:\n{self.log()}")

    def _listening(self) -> bool:
        # The registry logs this right after its bind succeeds, so the /v2/ answer that follows
        # is ours and not from whoever else might hold the port.
        text = self.log_file.read_text(errors="replace").rsplit("--- starting on ", 1)[-1]
        return f'msg="listening on {self.host}' in text

    def _probe(self) -> int | None:
        conn: http.client.HTTPConnection
        if self.ca_file:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            conn = http.client.HTTPSConnection(self.host, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        expected = 401 if (self._htpasswd or self._token) else 200
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                if "address already in use" in self.log():
                    return False
                raise RegistryError(f"docker-registry exited at start:\n{self.log()}")
            if self._listening():
                status = self._probe()
                if status == expected:
                    return True
                if status is not None:
                    raise RegistryError(
                        f"docker-registry answered GET /v2/ with {status}, not {expected}:\n"
                        f"{self.log()}"
                    )
            time.sleep(0.005)
        raise RegistryError(
            f"docker-registry did not answer GET {self.url}/v2/ within {START_TIMEOUT:g} s:\n"
            f"{self.log()}"
        )

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """Kill the registry and wait for it (idempotent). Its files stay for post-mortems."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGKILL: there is nothing to flush (temp storage, unbuffered log), and it cannot hang.
        proc.kill()
        proc.wait()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Registry {self.url} storage={self.storage}>"

    # Helpers for tests: raw distribution API calls, so tests do not depend on the code under test.

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def session(self, *, authenticated: bool = True) -> requests.Session:
        """A requests session that trusts the test CA and, unless told not to, logs in."""
        s = requests.Session()
        # No proxies or CA bundles from the environment: loopback only, our CA only.
        s.trust_env = False
        s.verify = str(self.ca_file) if self.ca_file else True
        if authenticated and self.auth:
            s.auth = self.auth
        return s

    def repository(self, prefix: str = "test") -> str:
        """A fresh repository name, so tests can share one registry without seeing each other."""
        return f"bpfman/{prefix}-{uuid.uuid4().hex[:12]}"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes; it serves them without checking the digest."""
        algo, _, hexdigest = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob (POST then monolithic PUT); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self.session() as s:
            r = s.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=30)
            _check(r, 202)
            location = r.headers["Location"]
            if location.startswith("/"):
                location = self.url + location
            r = s.put(
                location,
                params={"digest": digest},
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=30,
            )
            _check(r, 201)
        return digest

    def push_manifest(
        self, repository: str, reference: str, manifest: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """PUT a manifest under a tag (or its digest); returns the digest the registry reports."""
        with self.session() as s:
            r = s.put(
                f"{self.url}/v2/{repository}/manifests/{reference}",
                data=manifest,
                headers={"Content-Type": media_type},
                timeout=30,
            )
            _check(r, 201)
        return r.headers["Docker-Content-Digest"]

    def push_image(
        self,
        repository: str,
        tag: str,
        layers: list[tuple[bytes, str]],
        config: bytes = b"{}",
        config_media_type: str = OCI_CONFIG,
        annotations: dict[str, str] | None = None,
    ) -> tuple[str, bytes]:
        """Push the layers (bytes, media type), a config and an OCI manifest tagged `tag`.

        Returns the manifest's digest and its exact bytes.
        """
        descriptors = []
        for data, media_type in layers:
            descriptors.append(
                {
                    "mediaType": media_type,
                    "digest": self.push_blob(repository, data),
                    "size": len(data),
                }
            )
        manifest: dict = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": config_media_type,
                "digest": self.push_blob(repository, config),
                "size": len(config),
            },
            "layers": descriptors,
        }
        if annotations:
            manifest["annotations"] = annotations
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        return self.push_manifest(repository, tag, raw), raw


def _check(r: requests.Response, status: int) -> None:
    if r.status_code != status:
        raise RegistryError(
            f"{r.request.method} {r.url}: {r.status_code} (expected {status}): {r.text[:500]}"
        )
