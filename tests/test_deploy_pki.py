"""deploy.pki and deploy.commands: files and modes, formats that Flower 1.42's own loaders accept, SANs, a TLS
handshake against the server certificate, no overwriting, the commands and the connection file."""

from __future__ import annotations

import argparse
import ipaddress
import ssl
import stat
import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from deploy import commands
from deploy.__main__ import main as deploy_main
from deploy.pki import Pki, PkiError, make_pki


@pytest.fixture
def pki(tmp_path) -> Pki:
    return make_pki(tmp_path / "pki", ["10.81.0.1", "link.example"], ["gw1", "gw2", "gw3"])


def test_folders_0700_files_0600(pki):
    paths = list(pki.root.rglob("*"))
    assert len([p for p in paths if p.is_file()]) == 2 + 3 + 3 * 3
    for path in [pki.root, *paths]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_node_keys_load_with_flowers_own_loaders(pki):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    for gateway in ("gw1", "gw2", "gw3"):
        args = argparse.Namespace(auth_supernode_private_key=str(pki.gateway_key(gateway)),
                                  auth_supernode_public_key=None)  # fmt: skip
        private, public = _try_setup_client_authentication(args)  # flower-supernode --auth-supernode-private-key
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        registered = try_load_public_key(pki.gateway_pub(gateway))  # flwr supernode register KEY.pub
        assert registered == public_key_to_bytes(public)  # the SuperLink matches the node by these bytes
        assert pki.gateway_key(gateway).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert pki.gateway_pub(gateway).read_text().startswith("ecdsa-sha2-nistp384 ")
    assert len({pki.gateway_pub(g).read_text() for g in ("gw1", "gw2", "gw3")}) == 3


def test_server_certificate_sans_chain_and_flowers_loader(pki):
    from flwr.common.args import try_obtain_server_certificates

    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.81.0.1"),
                                                             ipaddress.ip_address("127.0.0.1")}  # fmt: skip
    assert set(sans.get_values_for_type(x509.DNSName)) == {"link.example", "localhost"}
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    args = argparse.Namespace(ssl_ca_certfile=str(pki.superlink_ca), ssl_certfile=str(pki.server_cert),
                              ssl_keyfile=str(pki.server_key))  # fmt: skip
    assert try_obtain_server_certificates(args)[0] == pki.ca_cert.read_bytes()
    for gateway in ("gw1", "gw2", "gw3"):
        assert pki.gateway_ca(gateway).read_bytes() == pki.ca_cert.read_bytes()


def _handshake(pki: Pki, hostname: str, cafile) -> None:
    """A TLS handshake in memory: a server with the SuperLink's certificate, a client trusting ``cafile``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.do_handshake()


def test_tls_handshake_by_name_and_address_and_wrong_ca(pki, tmp_path):
    for host in ("10.81.0.1", "127.0.0.1", "localhost", "link.example"):
        _handshake(pki, host, pki.gateway_ca("gw1"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(pki, "10.0.0.9", pki.gateway_ca("gw1"))  # not one of its SANs
    other = make_pki(tmp_path / "other", ["10.81.0.1"], [])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(pki, "10.81.0.1", other.ca_cert)  # another CA


def test_never_overwrites_reuses_ca_and_refuses_a_checkout(pki, tmp_path):
    before = pki.gateway_key("gw1").read_bytes()
    with pytest.raises(PkiError, match="--force"):
        make_pki(pki.root, [], ["gw1"])
    assert pki.gateway_key("gw1").read_bytes() == before
    ca = pki.ca_cert.read_bytes()
    make_pki(pki.root, [], ["gw4"])  # a gateway added later: same CA
    assert pki.ca_cert.read_bytes() == ca and pki.gateway_ca("gw4").read_bytes() == ca
    assert pki.gateways() == ["gw1", "gw2", "gw3", "gw4"]
    make_pki(pki.root, [], ["gw1"], force=True)
    assert pki.gateway_key("gw1").read_bytes() != before
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    with pytest.raises(PkiError, match="git checkout"):
        make_pki(tmp_path / "repo" / "keys", [], ["gw1"])
    with pytest.raises(PkiError, match="gateway name"):
        make_pki(tmp_path / "x", [], ["../gw"])


def test_commands_and_connection_file(pki, tmp_path):
    link = commands.superlink_command(pki, "10.81.0.1", 9093, tmp_path / "state.db")
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth", "--database",
                 "--disable-runtime-dependency-installation"):  # fmt: skip
        assert flag in link
    assert "--insecure" not in link
    node = commands.supernode_command(pki, "gw1", "10.81.0.1:9093", {"data-path": "/d/c.log", "dataset": "iot-23"})
    assert node[node.index("--root-certificates") + 1] == str(pki.gateway_ca("gw1"))
    assert node[node.index("--auth-supernode-private-key") + 1] == str(pki.gateway_key("gw1"))
    assert node[node.index("--node-config") + 1] == "data-path='/d/c.log' dataset='iot-23'"
    from flwr.common.config import parse_config_args

    assert parse_config_args([node[node.index("--node-config") + 1]]) == {"data-path": "/d/c.log",
                                                                           "dataset": "iot-23"}  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    commands.write_connection(home, "10.81.0.1:9093", pki.ca_cert)
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["superlink"]["default"] == "local" and config["superlink"]["local"]["address"] == ":local:"
    assert config["superlink"]["botdefender"] == {"address": "10.81.0.1:9093", "root-certificates": str(pki.ca_cert)}
    from flwr.cli.flower_config import parse_superlink_connection

    connection = parse_superlink_connection(config["superlink"]["botdefender"], "botdefender")
    assert connection.root_certificates == str(pki.ca_cert) and not connection.insecure


def test_cli_pki_and_dry_runs(tmp_path, capsys):
    out = tmp_path / "pki"
    assert deploy_main(["pki", "--out", str(out), "--superlink-host", "10.0.0.1", "--gateways", "gw1,gw2"]) == 0
    assert deploy_main(["pki", "--out", str(out), "--gateways", "gw1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert deploy_main(["superlink", "--pki", str(out), "--host", "10.0.0.1", "--dry-run"]) == 0
    assert deploy_main(["supernode", "--pki", str(out), "--gateway", "gw1", "--superlink", "10.0.0.1:8000",
                        "--data-path", "/d/c.log", "--dry-run"]) == 0  # fmt: skip
    assert deploy_main(["register", "--pki", str(out), "--superlink", "10.0.0.1:8000", "--flwr-home",
                        str(tmp_path / "home"), "--dry-run"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "flower-superlink --ssl-ca-certfile" in printed and "--enable-supernode-auth" in printed
    assert "flower-supernode --superlink 10.0.0.1:8000 --root-certificates" in printed
    assert printed.count("supernode register") == 2
