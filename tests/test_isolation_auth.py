"""The authenticated isolation API (issue 16, item 6): per-gateway tokens stored hashed in a 0600 tokens file, 401
for a missing or wrong token (logged with the caller), 403 for an address outside the gateway's networks, GET
/blocks scoped, TLS required beyond loopback and working on loopback with a test CA, the body limit before auth,
and the hook sending its token (a refused token keeps the calls queued; a scope refusal is final).

Reproduced on main: every call was accepted from anyone (a POST without a token blocked the host; any caller could
unblock any host), the API listened on any address without TLS, and the hook sent no credentials."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import FakeBackend
from gateway.hosts import HostVerdict
from sdn import auth
from sdn.api import IsolationAPI
from sdn.auth import AuthError, Gateway, TokenStore, digest, new_token
from sdn.blocklist import BlockStore
from sdn.hook import IsolationHook, hook_from_spec
from sdn.isolation import IsolationService
from sdn.safety import CircuitBreaker

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REPO = Path(__file__).resolve().parents[1]


def make_tokens(path, **networks: list[str]) -> dict[str, str]:
    """A tokens file with one gateway per keyword (``admin=[]`` makes an admin); returns name -> token."""
    tokens, gateways = {}, {}
    for name, nets in networks.items():
        tokens[name] = new_token(name)
        gateways[name] = Gateway(name, digest(tokens[name]), tuple(map(ipaddress.ip_network, nets)), name == "admin")
    auth.save(path, gateways)
    return tokens


@pytest.fixture
def secured(tmp_path):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend,
                               breaker=CircuitBreaker(max_per_minute=1000, max_blocked_share=1.0))  # fmt: skip
    tokens = make_tokens(tmp_path / "tokens.json", gw1=["10.0.1.0/24"], gw2=["10.0.2.0/24", "2001:db8:2::/48"],
                         admin=[])  # fmt: skip
    server = IsolationAPI(service, auth=TokenStore(tmp_path / "tokens.json"), read_timeout=0.5).start()
    yield server, backend, tokens
    server.stop()


def call(server, method: str, path: str, body: dict | None = None, token: str | None = None,
         scheme: str = "http", opener=OPENER) -> tuple[int, dict, dict]:  # fmt: skip
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request("%s://%s:%d%s" % (scheme, *server.address, path), data=data, method=method,
                                     headers=headers)  # fmt: skip
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_no_token_is_401_and_logged_with_the_callers_address_and_port(secured, caplog):
    server, backend, _ = secured
    with socket.create_connection(server.address, timeout=5) as s:
        port = s.getsockname()[1]
        body = b'{"ip": "10.0.1.5"}'
        s.sendall(b"POST /blocks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert " 401 " in head.splitlines()[0] and 'www-authenticate: bearer realm="isolation"' in head.lower()
    assert backend.rules == {}
    [record] = [r for r in caplog.records if r.name == "sdn.api" and "401" in r.getMessage()]
    assert record.levelno == logging.WARNING and f"127.0.0.1 port {port}" in record.getMessage()
    for method, path in (("GET", "/blocks"), ("DELETE", "/blocks/10.0.1.5"), ("GET", "/nothing")):
        assert call(server, method, path)[0] == 401
    code, answer, _ = call(server, "GET", "/health")  # open, and says nothing about gateways or blocks
    assert code == 200 and set(answer) == {"ok"}


def test_a_wrong_token_is_401_and_the_log_names_the_gateway_it_claims(secured, caplog):
    server, backend, tokens = secured
    rotated = new_token("gw1")
    code, answer, headers = call(server, "POST", "/blocks", {"ip": "10.0.1.5"}, token=rotated)
    assert code == 401 and "wrong token" in answer["reason"] and 'error="invalid_token"' in headers["www-authenticate"]
    assert "gw1" in caplog.text and rotated not in caplog.text and backend.rules == {}
    for bad in (tokens["gw1"] + "x", tokens["gw1"].replace("gw1", "gw2"), "bd1.nobody." + "a" * 43, "garbage"):
        assert call(server, "POST", "/blocks", {"ip": "10.0.1.5"}, token=bad)[0] == 401
    request = urllib.request.Request("http://%s:%d/blocks" % server.address, headers={"Authorization": "Basic eDp5"})
    with pytest.raises(urllib.error.HTTPError) as err:
        OPENER.open(request, timeout=5)
    assert err.value.code == 401 and backend.rules == {}


def test_an_address_outside_the_gateways_networks_is_403_for_block_and_unblock(secured, caplog):
    server, backend, tokens = secured
    code, answer, _ = call(server, "POST", "/blocks", {"ip": "10.0.2.5", "reason": "x"}, token=tokens["gw1"])
    assert code == 403 and "10.0.2.5" in answer["reason"] and "gw1" in answer["reason"] and backend.rules == {}
    assert answer.get("retry_after") is None  # final: the hook dead-letters it
    assert call(server, "POST", "/blocks", {"ip": "::ffff:10.0.2.5"}, token=tokens["gw1"])[0] == 403  # folded first
    assert call(server, "POST", "/blocks", {"ip": "10.0.2.5"}, token=tokens["gw2"])[0] == 200
    code, answer, _ = call(server, "DELETE", "/blocks/10.0.2.5", token=tokens["gw1"])
    assert code == 403 and "10.0.2.5" in answer["reason"] and "gw1" in answer["reason"]
    assert backend.rules == {"10.0.2.5": None}  # still blocked
    assert "gw1" in caplog.text and "10.0.2.5" in caplog.text


def test_a_valid_token_inside_its_networks_blocks_and_lists_only_its_own(secured):
    server, backend, tokens = secured
    code, answer, _ = call(server, "POST", "/blocks", {"ip": "10.0.1.5", "reason": "bot"}, token=tokens["gw1"])
    assert (code, answer["status"]) == (200, "blocked") and backend.rules == {"10.0.1.5": None}
    assert call(server, "POST", "/blocks", {"ip": "2001:db8:2::7"}, token=tokens["gw2"])[0] == 200
    assert [b["ip"] for b in call(server, "GET", "/blocks", token=tokens["gw1"])[1]["blocks"]] == ["10.0.1.5"]
    assert [b["ip"] for b in call(server, "GET", "/blocks", token=tokens["gw2"])[1]["blocks"]] == ["2001:db8:2::7"]
    assert len(call(server, "GET", "/blocks", token=tokens["admin"])[1]["blocks"]) == 2
    assert call(server, "DELETE", "/blocks/10.0.1.5", token=tokens["gw1"])[1]["status"] == "unblocked"
    assert call(server, "POST", "/blocks", {"ip": "nonsense"}, token=tokens["gw1"])[0] == 400  # checked as before


def test_the_body_limit_applies_before_authentication(secured):
    server, backend, _ = secured
    code, answer, _ = call(server, "POST", "/blocks", {"ip": "10.0.1.5", "reason": "x" * 60_000})
    assert code == 413 and backend.rules == {}
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"POST /blocks HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 1000)
        assert b" 413 " in s.recv(4096).split(b"\r\n")[0]


def test_the_cli_stores_only_hashes_in_a_0600_file_and_the_api_follows_its_changes(tmp_path, capsys, secured):
    path = tmp_path / "cli-tokens.json"
    assert auth.main(["add", "--tokens", str(path), "--gateway", "gw1", "--network", "10.0.1.0/24"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("bd1.gw1.") and token not in path.read_text()
    assert token.rsplit(".", 1)[1] not in path.read_text() and digest(token) in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert auth.main(["add", "--tokens", str(path), "--gateway", "gw2", "--network", "10.0.2.0/24", "--token-file",
                      str(tmp_path / "gw2.token")]) == 0  # fmt: skip
    assert capsys.readouterr().out == "" and oct((tmp_path / "gw2.token").stat().st_mode & 0o777) == "0o600"
    assert auth.main(["list", "--tokens", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "gw1\t10.0.1.0/24" in listing and token not in listing and digest(token) not in listing
    assert auth.main(["add", "--tokens", str(path), "--gateway", "gw1", "--network", "10.0.1.0/24"]) == 2
    assert auth.main(["add", "--tokens", str(path), "--gateway", "gw3", "--network", "10.0.300.0/24"]) == 2
    # the running API loads the file again when it changes: rotate and remove take effect without a restart
    server, backend, tokens = secured
    store = server.app.auth
    assert call(server, "GET", "/blocks", token=tokens["gw1"])[0] == 200
    assert auth.main(["rotate", "--tokens", str(store.path), "--gateway", "gw1"]) == 0
    fresh = capsys.readouterr().out.strip()
    assert call(server, "GET", "/blocks", token=tokens["gw1"])[0] == 401
    assert call(server, "GET", "/blocks", token=fresh)[0] == 200
    assert auth.main(["remove", "--tokens", str(store.path), "--gateway", "gw1"]) == 0
    assert call(server, "GET", "/blocks", token=fresh)[0] == 401
    store.path.write_text("{broken")  # a broken file refuses every call (it stays 0600: written in place)
    assert call(server, "GET", "/blocks", token=tokens["gw2"])[0] == 401


def test_a_tokens_file_readable_by_others_or_malformed_is_refused(tmp_path):
    path = tmp_path / "tokens.json"
    make_tokens(path, gw1=["10.0.1.0/24"])
    path.chmod(0o644)
    with pytest.raises(AuthError, match=r"mode 0644: group or others may read it; chmod 600"):
        TokenStore(path)
    path.chmod(0o600)
    TokenStore(path)
    for text, problem in (("[]", "expected"), ('{"gateways": {"gw 1": {}}}', "a name is"),
                          ('{"gateways": {"gw1": {"hash": "abc", "networks": ["10.0.0.0/8"]}}}', "hash must be"),
                          ('{"gateways": {"gw1": {"hash": "sha256:' + "0" * 64 + '", "networks": ["10.0.0.1/8"]}}}',
                           "has host bits set"), ("{", "not JSON")):  # fmt: skip
        path.write_text(text)
        with pytest.raises(AuthError, match=problem):
            TokenStore(path)


def test_beyond_loopback_the_api_needs_tokens_and_tls(tmp_path):
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), FakeBackend())
    make_tokens(tmp_path / "tokens.json", gw1=["10.0.1.0/24"])
    store = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(ValueError, match="beyond loopback it needs TLS"):
        IsolationAPI(service, "0.0.0.0", auth=store)
    with pytest.raises(ValueError, match="beyond loopback it needs a tokens file"):
        IsolationAPI(service, "::", auth=None, ssl={"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"})
    with pytest.raises(ValueError, match="TLS files"):
        IsolationAPI(service, "127.0.0.1", auth=store, ssl={"ssl_certfile": str(tmp_path / "none.pem"),
                                                           "ssl_keyfile": str(tmp_path / "none.key")})  # fmt: skip


def test_the_controller_config_turns_auth_on_and_refuses_what_is_unsafe(tmp_path):
    pytest.importorskip("os_ken")
    from sdn.controller import ControllerConfig

    config = tmp_path / "controller.toml"
    for api, problem in (("", "tokens = \"FILE\" is required"), ('auth = "none"\nhost = "0.0.0.0"', "beyond loopback"),
                         ('tokens = "t.json"\nhost = "10.1.2.3"', "needs tokens and TLS"),
                         ('auth = "none"\ntokens = "t.json"', "contradict"),
                         ('auth = "maybe"', "auth must be")):  # fmt: skip
        config.write_text(f"[api]\n{api}\n")
        with pytest.raises(ValueError, match=problem):
            ControllerConfig.from_toml(config)
    config.write_text('[api]\nhost = "0.0.0.0"\ntokens = "t.json"\ncertfile = "c.pem"\nkeyfile = "k.pem"\n'
                      'client_ca = "ca.pem"\n')  # fmt: skip
    loaded = ControllerConfig.from_toml(config)
    assert (loaded.auth, loaded.tokens) == ("tokens", "t.json")
    assert loaded.tls() == {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem", "ssl_ca_certs": "ca.pem",
                            "ssl_cert_reqs": ssl.CERT_REQUIRED}  # fmt: skip
    make_tokens(tmp_path / "tokens.json", gw1=["10.0.1.0/24"])
    (tmp_path / "tokens.json").chmod(0o640)
    config.write_text(f'[api]\ntokens = "{tmp_path / "tokens.json"}"\n[store]\npath = "{tmp_path / "b.sqlite"}"\n')
    done = subprocess.run([sys.executable, "-m", "sdn.controller", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stdout.count("\n") == 1, done.stdout + done.stderr
    assert "mode 0640" in done.stdout and "chmod 600" in done.stdout


# ---- TLS on loopback with a test CA ---------------------------------------------------------------------------
def _certificate(subject: str, key, issuer_cert, issuer_key, *, ca: bool = False, ip: str | None = None,
                 client: bool = False) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key((issuer_key or key).public_key()),
                              critical=False))  # fmt: skip
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)  # fmt: skip
    else:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)  # fmt: skip
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files (keys mode 0600)."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("BotDefender test CA", ca_key, None, None, ca=True)
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, kwargs in (("server", {"ip": "127.0.0.1"}), ("client", {"client": True})):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"test {role}", key, ca, ca_key, **kwargs)
        files[role] = folder / f"{role}.pem"
        files[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = folder / f"{role}.key"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        files[f"{role}_key"].write_bytes(pem)
        files[f"{role}_key"].chmod(0o600)
    return {k: str(v) for k, v in files.items()}


def _tls_api(tmp_path, test_ca, *, client_certs: bool = False):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend)
    tokens = make_tokens(tmp_path / "tokens.json", gw1=["10.0.1.0/24"])
    options = {"ssl_certfile": test_ca["server"], "ssl_keyfile": test_ca["server_key"]}
    if client_certs:
        options |= {"ssl_ca_certs": test_ca["ca"], "ssl_cert_reqs": ssl.CERT_REQUIRED}
    server = IsolationAPI(service, auth=TokenStore(tmp_path / "tokens.json"), ssl=options).start()
    return server, backend, tokens


def _token_file(tmp_path, token: str, mode: int = 0o600):
    path = tmp_path / "gw.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def verdict(host: str, action: str = "isolate") -> HostVerdict:
    return HostVerdict(host=host, action=action, time=0.0, flows=20, malicious=19 if action == "isolate" else 1)


def test_tls_on_loopback_and_the_hook_delivers_over_https_with_its_ca(tmp_path, test_ca, caplog):
    server, backend, tokens = _tls_api(tmp_path, test_ca)
    try:
        trusted = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=test_ca["ca"])))  # fmt: skip
        assert call(server, "GET", "/blocks", token=tokens["gw1"], scheme="https", opener=trusted)[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain http to the TLS port gets no answer
            call(server, "GET", "/health")
        url = "https://%s:%d" % server.address
        token_file = _token_file(tmp_path, tokens["gw1"])
        hook = hook_from_spec(f"{url}?queue={tmp_path / 'q.sqlite'}&interval=1000&token_file={token_file}"
                              f"&ca={test_ca['ca']}")  # fmt: skip
        hook.emit(verdict("10.0.1.5"))
        assert hook.drain(5) and backend.rules == {"10.0.1.5": None}
        hook.close()
        untrusting = IsolationHook(url, tmp_path / "q2.sqlite", interval=None, token=tokens["gw1"], timeout=1)
        untrusting.emit(verdict("10.0.1.6"))  # the system's CAs do not know the test CA: not sent, still queued
        assert untrusting.pending() == 1 and "10.0.1.6" not in backend.rules
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        untrusting.close()
        assert tokens["gw1"] not in caplog.text
    finally:
        server.stop()


def test_client_certificates_when_the_controller_asks_for_them(tmp_path, test_ca):
    server, backend, tokens = _tls_api(tmp_path, test_ca, client_certs=True)
    try:
        url = "https://%s:%d" % server.address
        without = IsolationHook(url, tmp_path / "q1.sqlite", interval=None, token=tokens["gw1"], cafile=test_ca["ca"],
                                timeout=1)  # fmt: skip
        without.emit(verdict("10.0.1.5"))
        assert without.pending() == 1 and backend.rules == {}
        without.close()
        hook = IsolationHook(url, tmp_path / "q2.sqlite", interval=None, token=tokens["gw1"], cafile=test_ca["ca"],
                             certfile=test_ca["client"], keyfile=test_ca["client_key"])  # fmt: skip
        hook.emit(verdict("10.0.1.5"))
        assert hook.pending() == 0 and backend.rules == {"10.0.1.5": None}
        hook.close()
    finally:
        server.stop()


# ---- the hook's token ----------------------------------------------------------------------------------------
def test_the_hook_sends_its_token_and_a_refused_token_keeps_the_calls_queued(secured, tmp_path, caplog):
    server, backend, tokens = secured
    url = "http://%s:%d" % server.address
    token_file = _token_file(tmp_path, new_token("gw1"))  # a rotated-away token: the operator's mistake
    hook = hook_from_spec(f"{url}?queue={tmp_path / 'q.sqlite'}&interval=1000&token_file={token_file}")
    for host in ("10.0.1.5", "10.0.1.6", "10.0.1.7"):
        hook.emit(verdict(host))
    assert hook.pending() == 3 and hook.dead_letters() == [] and backend.rules == {}
    assert hook.flush(force=True) == 0 and hook.pending() == 3 and hook.dead_letters() == []
    assert any(r.levelno == logging.ERROR and "401" in r.getMessage() for r in caplog.records if r.name == "sdn.hook")
    token_file.write_text(tokens["gw1"] + "\n")  # fixed: read again on the next call
    assert hook.flush(force=True) == 3 and hook.pending() == 0 and len(backend.rules) == 3
    hook.emit(verdict("10.0.2.9"))  # outside gw1's networks: a final refusal, dead-lettered
    assert hook.drain(5) and [d["code"] for d in hook.dead_letters()] == [403]
    assert "gw1" in hook.dead_letters()[0]["reason"] and "10.0.2.9" not in backend.rules
    hook.close()
    assert tokens["gw1"] not in caplog.text and "Bearer" not in caplog.text


def test_the_hook_takes_its_token_from_the_environment(secured, tmp_path, monkeypatch):
    server, backend, tokens = secured
    monkeypatch.setenv("BOTDEFENDER_ISOLATION_TOKEN", tokens["gw2"])
    hook = hook_from_spec("http://%s:%d?queue=%s&interval=1000" % (*server.address, tmp_path / "q.sqlite"))
    hook.emit(verdict("10.0.2.5"))
    assert hook.drain(5) and backend.rules == {"10.0.2.5": None}
    hook.close()


def test_the_hook_refuses_tokens_it_could_leak(tmp_path, monkeypatch):
    queue = f"queue={tmp_path / 'q.sqlite'}"
    secret = new_token("gw1")
    for spec, problem in ((f"http://127.0.0.1:8470?{queue}&token={secret}", "token in the URL is refused"),
                          (f"http://gw1:{secret}@127.0.0.1:8470?{queue}", "credentials in the URL"),
                          (f"http://127.0.0.1:8470?{queue}&ca=x.pem", "need an https URL")):  # fmt: skip
        with pytest.raises(ValueError, match=problem) as err:
            hook_from_spec(spec)
        assert secret not in str(err.value)
    readable = _token_file(tmp_path, secret, 0o644)
    with pytest.raises(ValueError, match="mode 0644"):
        hook_from_spec(f"http://127.0.0.1:8470?{queue}&token_file={readable}")
    monkeypatch.setenv("BOTDEFENDER_ISOLATION_TOKEN", secret)
    with pytest.raises(ValueError, match="in the clear"):
        hook_from_spec(f"http://10.1.2.3:8470?{queue}")
    os.environ.pop("BOTDEFENDER_ISOLATION_TOKEN")
