"""A bearer-token server for a test registry: the OAuth2 flow Docker Hub, quay.io and
distribution's `auth.token` use. Given a user and password by basic auth (or none, for the
anonymous pulls it allows), it answers GET /token?service=...&scope=repository:NAME:ACTIONS with
a JWT signed by its own key (ES256), whose certificate the registry trusts (`rootcertbundle`) and
which the token carries in its `x5c` header."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "bpfman-test-registry"
ISSUER = "bpfman-test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Users with passwords may pull and push; anyone may pull repositories under ``public/``.
    ``issued`` lists (user, scope) of every token handed out."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bpfman test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = directory / "token-signer.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.username, self.password = "tokenuser", secrets.token_urlsafe(16)
        self.issued: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._answer(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def registry_config(self) -> dict:
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert_file),
        }

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _user(self, header: str | None) -> str | None:
        """The authenticated user, "" for none, None for wrong credentials."""
        if not header:
            return ""
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        ok = (user, password) == (self.username, self.password)
        return user if ok else None

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        query = parse_qs(url.query)
        user = self._user(request.headers.get("Authorization"))
        if url.path != "/token" or user is None or query.get("service") != [SERVICE]:
            request.send_response(401)
            request.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            allowed = wanted if user else [a for a in wanted if a == "pull"]
            if not user and not name.startswith("public/"):
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
            self.issued.append((user, scope))
        token = self._jwt(user, access)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _jwt(self, user: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {
            "alg": "ES256",
            "typ": "JWT",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
