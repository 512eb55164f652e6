"""Real servers for the alert tests: aiosmtpd on 127.0.0.1 and a local Twilio API double."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

SMTP_USER = "btlive"
SMTP_PASSWORD = "correct horse battery staple"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-token-never-logged-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1/localhost, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def server_context(tls_files) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


# -- SMTP --------------------------------------------------------------------------------------


class Recorder:
    """An aiosmtpd handler that records deliveries and can inject faults."""

    def __init__(self) -> None:
        self.messages: list = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.data_replies: list[str] = []  # popped per DATA; '250 OK' when empty
        self.refuse: dict[str, str] = {}  # recipient -> reply
        self.delay = 0.0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            reply = self.data_replies.pop(0) if self.data_replies else "250 OK"
        if not reply.startswith("250"):
            return reply
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def alert_ids(self) -> list[str]:
        with self.lock:
            return [m["X-Btlive-Alert-Id"] for m in self.messages]


def _authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
          and auth_data.password.decode() == SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    def __init__(self, controller, recorder: Recorder, port: int) -> None:
        self.controller, self.recorder, self.port = controller, recorder, port


@contextlib.contextmanager
def smtp(**kwargs):
    """An aiosmtpd server on 127.0.0.1 (``kwargs`` go to its Controller), stopped on exit."""
    from aiosmtpd.controller import Controller

    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(controller, recorder, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server():
    """A plain SMTP server (no TLS, no auth)."""
    with smtp() as server:
        yield server


@pytest.fixture
def smtp_starttls(tls_files):
    """STARTTLS required, AUTH required (LOGIN/PLAIN), self-signed certificate."""
    with smtp(tls_context=server_context(tls_files), require_starttls=True,
              authenticator=_authenticator, auth_required=True) as server:
        yield server


@pytest.fixture
def smtp_ssl(tls_files):
    """Implicit TLS (SMTPS) with AUTH."""
    with smtp(ssl_context=server_context(tls_files), authenticator=_authenticator,
              auth_required=True, auth_require_tls=False) as server:
        yield server


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


# -- Twilio ------------------------------------------------------------------------------------


class TwilioDouble:
    """A local HTTP server speaking the part of Twilio's REST API that messages.create uses.

    ``script`` is a list of (status, body dict, delay seconds) consumed one per request;
    when empty the reply is 201 with a queued message.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, float]] = []
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                with double.lock:
                    step = double.script.pop(0) if double.script else None
                    double.requests.append({"path": self.path, "form": form,
                                            "auth": self.headers.get("Authorization"),
                                            "agent": self.headers.get("User-Agent")})
                    number = len(double.requests)
                status, body, delay = step or (201, None, 0.0)
                if delay:
                    time.sleep(delay)
                if body is None:
                    body = {"sid": f"SM{number:032d}", "status": "queued", "to": form.get("To"),
                            "from": form.get("From"), "body": form.get("Body")}
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close() joins the handler threads
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict]:
        """Requests that got a 201 (what Twilio would have sent)."""
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2)


def twilio_error(status: int, code: int, message: str) -> dict:
    return {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}


@pytest.fixture
def twilio_double():
    double = TwilioDouble()
    yield double
    double.close()


@pytest.fixture(scope="session")
def kit():
    """Constants and helpers for the tests (conftest is not importable in importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(SMTP_USER=SMTP_USER, SMTP_PASSWORD=SMTP_PASSWORD, TWILIO_SID=TWILIO_SID,
                           TWILIO_TOKEN=TWILIO_TOKEN, free_port=free_port, wait_for=wait_for,
                           twilio_error=twilio_error, smtp=smtp)


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every test must stop the threads it started (servers, dispatcher workers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            return
        time.sleep(0.02)
    pytest.fail(f"threads left running: {[t.name for t in left]}")
