"""Signed bundles and safe installs (issue 16): the operator's Ed25519 key signs manifest.json, a gateway pins the
public key, and an install refuses an unsigned bundle, a bad or foreign signature, a file changed after signing,
unexpected or oversize files and a downgrade, each with its own one-line message, leaving ``current`` as it was."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from gateway.bundle import BundleError, load_bundle, sha256_of
from gateway.install import install_bundle, pack_bundle, read_installed
from gateway.signing import SIGNATURE, generate_signing_key, sign_bundle, verify_bundle_signature


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    return generate_signing_key(tmp_path / "keys" / "operator.key", tmp_path / "keys" / "operator.pub")


def make_bundle(bundle_dir: Path, folder: Path, key: Path | None, release: int | None, version: str = "v",
                edit=None) -> Path:  # fmt: skip
    """A copy of the session's exported bundle with ``release`` and ``model_version`` (and ``edit`` applied to its
    manifest), its sha256 list rewritten as an exporter would, signed with ``key`` unless None."""
    copy = Path(shutil.copytree(bundle_dir, folder))
    (copy / SIGNATURE).unlink(missing_ok=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("release", None)
    if release is not None:
        manifest["release"] = release
    manifest["model_version"] = version
    if edit is not None:
        edit(manifest)
    manifest["files"] = {m["file"]: sha256_of(copy / m["file"]) for m in manifest["models"].values()}
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if key is not None:
        sign_bundle(copy, key)
    return copy


def _flip(data: bytes, at: int | None = None) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2 if at is None else at] ^= 0x01
    return bytes(changed)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path, keys):
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes()
    with pytest.raises(BundleError, match="exists; refusing to overwrite"):
        generate_signing_key(private, tmp_path / "other.pub")
    assert private.read_bytes() == before
    generate_signing_key(private, public, overwrite=True)
    assert private.read_bytes() != before and stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_signed_bundle_verifies_loads_and_packs_with_its_signature(bundle_dir, tmp_path, keys):
    private, public = keys
    bundle = make_bundle(bundle_dir, tmp_path / "b", private, 7, "seven")
    assert (bundle / SIGNATURE).is_file()
    assert verify_bundle_signature(bundle, public) == (bundle / "manifest.json").read_bytes()
    loaded = load_bundle(bundle)  # manifest.sig is neither in the sha256 list nor refused
    assert loaded.release == 7 and SIGNATURE not in loaded.manifest["files"]
    files = pack_bundle(bundle)
    assert set(files) == {"manifest.json", SIGNATURE, *loaded.manifest["files"]}
    assert load_bundle(bundle_dir).release >= 1  # the exporter sets one by default


def test_the_keygen_sign_verify_and_install_commands(bundle_dir, tmp_path, capsys):
    from gateway.__main__ import main

    private, public = tmp_path / "op.key", tmp_path / "op.pub"
    assert main(["keygen", "--private", str(private), "--public", str(public)]) == 0
    assert main(["keygen", "--private", str(private), "--public", str(public)]) == 2
    assert "exists; refusing to overwrite" in capsys.readouterr().err
    bundle = make_bundle(bundle_dir, tmp_path / "b", None, 3)
    assert main(["sign", "--bundle", str(bundle), "--key", str(private)]) == 0
    assert main(["verify", "--bundle", str(bundle), "--public-key", str(public)]) == 0
    assert "release 3" in capsys.readouterr().out
    root = tmp_path / "root"
    assert main(["install", "--from", str(bundle), "--root", str(root), "--public-key", str(public)]) == 0
    assert "release 3 (model version v) installed" in capsys.readouterr().out
    assert os.readlink(root / "current") == "releases/3"
    assert main(["install", "--from", str(bundle), "--root", str(root), "--public-key", str(public)]) == 0
    assert "already installed" in capsys.readouterr().out


def test_an_unsigned_bundle_is_refused(bundle_dir, tmp_path, keys):
    bundle = make_bundle(bundle_dir, tmp_path / "b", None, 2)
    with pytest.raises(BundleError, match="missing signature"):
        verify_bundle_signature(bundle, keys[1])
    with pytest.raises(BundleError, match="missing signature"):
        pack_bundle(bundle)
    with pytest.raises(BundleError, match="unsigned"):
        install_bundle(pack_bundle(bundle, require_signature=False), tmp_path / "root", keys[1])


def test_a_flipped_byte_of_the_signature_is_a_bad_signature(bundle_dir, tmp_path, keys):
    bundle = make_bundle(bundle_dir, tmp_path / "b", keys[0], 2)
    signature = base64.b64decode((bundle / SIGNATURE).read_bytes())
    (bundle / SIGNATURE).write_bytes(base64.b64encode(_flip(signature, 5)) + b"\n")
    with pytest.raises(BundleError, match="bad signature"):
        verify_bundle_signature(bundle, keys[1])
    with pytest.raises(BundleError, match="bad signature"):
        install_bundle(pack_bundle(bundle), tmp_path / "root", keys[1])
    (bundle / SIGNATURE).write_bytes(b"not base64 at all!\n")
    with pytest.raises(BundleError, match=r"bad signature \(not base64\)"):
        verify_bundle_signature(bundle, keys[1])


def test_a_signature_by_another_key_is_refused(bundle_dir, tmp_path, keys):
    other, _ = generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")
    bundle = make_bundle(bundle_dir, tmp_path / "b", other, 2)
    with pytest.raises(BundleError, match="bad signature: manifest.json is not signed by the key"):
        verify_bundle_signature(bundle, keys[1])
    with pytest.raises(BundleError, match="bad signature"):
        install_bundle(pack_bundle(bundle), tmp_path / "root", keys[1])


def test_a_model_file_changed_after_signing_is_refused(bundle_dir, tmp_path, keys):
    bundle = make_bundle(bundle_dir, tmp_path / "b", keys[0], 2)
    files = pack_bundle(bundle)
    name = "model_int8_b1.tflite.xz"
    files[name] = _flip(files[name])
    with pytest.raises(BundleError, match=rf"bundle refused: .*{name}: sha256 .* does not match"):
        install_bundle(files, tmp_path / "root", keys[1])
    assert not (tmp_path / "root" / "current").exists()


def test_a_manifest_changed_after_signing_is_refused(bundle_dir, tmp_path, keys):
    bundle = make_bundle(bundle_dir, tmp_path / "b", keys[0], 2)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"] = 0.01  # every flow an attack: exactly what a signature must stop
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    load_bundle(bundle)  # the sha256 list still matches: only the signature catches it
    with pytest.raises(BundleError, match="bad signature"):
        verify_bundle_signature(bundle, keys[1])
    with pytest.raises(BundleError, match="bad signature"):
        install_bundle(pack_bundle(bundle), tmp_path / "root", keys[1])


def test_keys_of_the_wrong_type_or_unreadable_are_named(bundle_dir, tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_public = tmp_path / "ec.pub"
    ec_public.write_bytes(ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    ec_private = tmp_path / "ec.key"
    ec_private.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))  # fmt: skip
    bundle = make_bundle(bundle_dir, tmp_path / "b", keys[0], 2)
    with pytest.raises(BundleError, match="public key .*ec.pub: wrong key type"):
        verify_bundle_signature(bundle, ec_public)
    with pytest.raises(BundleError, match="private key .*ec.key: wrong key type"):
        sign_bundle(bundle, ec_private)
    with pytest.raises(BundleError, match="public key .*missing.pub: unreadable"):
        verify_bundle_signature(bundle, tmp_path / "missing.pub")
    (tmp_path / "garbage.pub").write_text("hello")
    with pytest.raises(BundleError, match="public key .*garbage.pub: unreadable"):
        install_bundle(pack_bundle(bundle), tmp_path / "root", tmp_path / "garbage.pub")


def test_signing_needs_a_release_and_the_manifest_checks_it(bundle_dir, tmp_path, keys):
    bundle = make_bundle(bundle_dir, tmp_path / "b", None, None)
    assert load_bundle(bundle).release == 0  # a bundle from before releases
    with pytest.raises(BundleError, match="no 'release' number"):
        sign_bundle(bundle, keys[0])
    for bad in (0, -3, True, "5", 1.5):
        folder = make_bundle(bundle_dir, tmp_path / f"bad{bad!r}", None, None,
                             edit=lambda m, b=bad: m.update(release=b))  # fmt: skip
        with pytest.raises(BundleError, match="'release' must be a release number"):
            load_bundle(folder)


def test_a_downgrade_is_refused_and_the_same_release_again_is_a_no_op(bundle_dir, tmp_path, keys):
    root = tmp_path / "root"
    first = install_bundle(pack_bundle(make_bundle(bundle_dir, tmp_path / "r5", keys[0], 5, "five")), root, keys[1])
    assert (first.release, first.model_version, first.installed) == (5, "five", True)
    assert first.path == root / "releases" / "5" and os.readlink(root / "current") == "releases/5"
    again = install_bundle(pack_bundle(tmp_path / "r5"), root, keys[1])
    assert again.installed is False and "already installed" in again.message
    with pytest.raises(BundleError, match="downgrade, release 3 is not newer than release 5"):
        install_bundle(pack_bundle(make_bundle(bundle_dir, tmp_path / "r3", keys[0], 3)), root, keys[1])
    other = make_bundle(bundle_dir, tmp_path / "r5b", keys[0], 5, "five-again")
    with pytest.raises(BundleError, match="release 5 is already installed here with other content"):
        install_bundle(pack_bundle(other), root, keys[1])
    later = install_bundle(pack_bundle(make_bundle(bundle_dir, tmp_path / "r9", keys[0], 9, "nine")), root, keys[1])
    assert later.release == 9 and os.readlink(root / "current") == "releases/9"
    assert load_bundle(root / "current").model_version == "nine"
    state = read_installed(root)
    assert state["highest"] == 9 and sorted(state["releases"]) == ["5", "9"]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update({"sub/model.tflite": b"x"}), "unexpected file name 'sub/model.tflite'"),
    (lambda f: f.update({"..": b"x"}), "unexpected file name '..'"),
    (lambda f: f.update({"..\\evil": b"x"}), "unexpected file name"),
    (lambda f: f.update({".hidden": b"x"}), "unexpected file name '.hidden'"),
    (lambda f: f.update({"extra.bin": b"x"}), "unexpected file.* extra.bin .not in the manifest"),
    (lambda f: f.pop("model_fp32_b1.tflite.xz"), "model_fp32_b1.tflite.xz named in the manifest are missing"),
    (lambda f: f.update({f"f{i}": b"" for i in range(70)}), "files, at most 64 are accepted"),
    (lambda f: f.update({"manifest.json": b"{" * 10}), "bad signature"),
])  # fmt: skip
def test_unexpected_names_and_counts_are_refused(bundle_dir, tmp_path, keys, change, message):
    files = pack_bundle(make_bundle(bundle_dir, tmp_path / "b", keys[0], 2))
    change(files)
    with pytest.raises(BundleError, match=message):
        install_bundle(files, tmp_path / "root", keys[1])


def test_an_oversize_bundle_is_refused_before_it_is_read(bundle_dir, tmp_path, keys):
    files = pack_bundle(make_bundle(bundle_dir, tmp_path / "b", keys[0], 2))
    total = sum(map(len, files.values()))
    with pytest.raises(BundleError, match=f"oversize, its files hold more than {total - 1} bytes"):
        install_bundle(files, tmp_path / "root", keys[1], max_bytes=total - 1)
    files["manifest.sig"] = b"A" * 1000
    with pytest.raises(BundleError, match="oversize manifest.sig"):
        install_bundle(files, tmp_path / "root", keys[1])
    assert install_bundle(pack_bundle(tmp_path / "b"), tmp_path / "root", keys[1], max_bytes=total).release == 2


def test_a_refused_install_leaves_current_and_the_releases_unchanged(bundle_dir, tmp_path, keys):
    root = tmp_path / "root"
    install_bundle(pack_bundle(make_bundle(bundle_dir, tmp_path / "r4", keys[0], 4, "four")), root, keys[1])
    before = (os.readlink(root / "current"), (root / "installed.json").read_bytes(), sorted(os.listdir(root)))
    newer = pack_bundle(make_bundle(bundle_dir, tmp_path / "r6", keys[0], 6, "six"))
    broken = dict(newer, **{"model_int8_b256.tflite.xz": _flip(newer["model_int8_b256.tflite.xz"])})
    with pytest.raises(BundleError, match="does not match"):  # refused after its files were written to staging
        install_bundle(broken, root, keys[1])
    after = (os.readlink(root / "current"), (root / "installed.json").read_bytes(), sorted(os.listdir(root)))
    assert after == before and os.listdir(root / "releases") == ["4"]
    assert load_bundle(root / "current").model_version == "four"
    assert install_bundle(newer, root, keys[1]).release == 6  # the good files of the same release still install


def test_export_sets_a_release_and_signs_with_sign_key(raw_checkpoint, tmp_path, keys, capsys):
    from gateway.__main__ import main
    from gateway.export import default_release

    assert default_release(10**15) == 10**15 + 1 and default_release() > 1_700_000_000_000
    out = tmp_path / "bundle"
    args = ["export", str(raw_checkpoint[0]), "--out", str(out), "--batch-sizes", "8", "--sign-key", str(keys[0])]
    assert main([*args, "--release", "41"]) == 0
    assert "release 41" in capsys.readouterr().out
    verify_bundle_signature(out, keys[1])
    assert load_bundle(out).release == 41
    assert main(args) == 0  # the default: milliseconds since the epoch, above the folder's previous release
    assert load_bundle(out).release > 1_700_000_000_000
    verify_bundle_signature(out, keys[1])
