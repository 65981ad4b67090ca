"""HTTPS: ``origin serve --tls-cert --tls-key`` on the same port, in every worker.

A test CA and a server certificate for 127.0.0.1 are made here with ``cryptography``;
the real ``origin serve --workers 2`` serves them.  Real clients trusting only the test
CA — aiohttp, curl, ffmpeg — fetch playlists, AES-128 segments and keys over HTTPS and
decrypt to the clear bytes; each has a control that must fail (a client that does not
trust the CA, a wrong key).  Plain HTTP to the TLS port gets no HTTP answer.  A key that
does not match the certificate, a lone ``--tls-cert``, an encrypted key: startup stops
with one clear line and a non-zero status, no traceback.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.padding import PKCS7
from cryptography.x509.oid import NameOID

from origin.config import TlsFiles
from origin.http.memory_file import MEMORY_FILE_MIN
from origin.tls import TlsConfigError, key_file_warning, server_context
from tests.conftest import DEMO, ROOT, RunningOrigin, start_origin

CLI_TIMEOUT = 60.0
FFMPEG_TIMEOUT = 240.0


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_key_file: Path
    other_ca_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(folder: Path) -> Pki:
    """A test CA, a server certificate it signed for 127.0.0.1 (key 0600), an unrelated key
    and an unrelated CA."""
    ca_key, ca_cert = _ca("origin test CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _, other_ca = _ca("another CA")
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                  folder / "other.key", folder / "other-ca.pem")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca_file.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                              + ca_cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((pki.key_file, leaf_key),
                      (pki.other_key_file, ec.generate_private_key(ec.SECP256R1()))):
        path.write_bytes(_key_pem(key))
        path.chmod(0o600)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_origin(pki: Pki, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RunningOrigin]:
    state = tmp_path_factory.mktemp("tls-state")
    server = start_origin(DEMO.parent, state, "--tls-cert", str(pki.cert_file),
                          "--tls-key", str(pki.key_file), workers=2)
    yield server
    assert server.stop() == 0


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def aes128_decrypt(body: bytes, key: bytes, iv: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def decrypts_to(body: bytes, key: bytes, iv: bytes, clear: bytes) -> bool:
    try:
        return aes128_decrypt(body, key, iv) == clear
    except ValueError:  # bad padding: a wrong key, most of the time
        return False


def segment_key(playlist: str, segment: str) -> tuple[str, bytes]:
    """The key URI and IV of the ``EXT-X-KEY`` right before ``segment``'s line."""
    lines = playlist.splitlines()
    at = lines.index(segment)
    for line in reversed(lines[:at]):
        if line.startswith("#EXT-X-KEY:"):
            match = re.search(r'URI="([^"]+)",IV=0x([0-9A-Fa-f]{32})', line)
            assert match is not None, line
            return match.group(1), bytes.fromhex(match.group(2))
    raise AssertionError(f"no EXT-X-KEY before {segment}")


def test_announced_url_is_https(tls_origin: RunningOrigin) -> None:
    assert tls_origin.base.startswith("https://127.0.0.1:")
    assert all(line.split()[-1].startswith("https://") for line in tls_origin.lines
               if "://" in line)


async def test_playlist_segment_and_key_over_https(tls_origin: RunningOrigin,
                                                   pki: Pki) -> None:
    base = tls_origin.base
    connector = aiohttp.TCPConnector(ssl=client_context(pki.ca_file))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/hls/demo/aes128/video-360p/index.m3u8") as resp:
            assert resp.status == 200
            assert resp.url.scheme == "https"
            playlist = await resp.text()
        key_uri, iv = segment_key(playlist, "seg-00001.m4s")
        async with session.get(f"{base}/hls/demo/aes128/video-360p/seg-00001.m4s") as resp:
            assert resp.status == 200
            encrypted = await resp.read()
        async with session.get(base + key_uri) as resp:
            assert resp.status == 200
            key = await resp.read()
        # The licence URLs the origin writes follow the request's scheme (--public-url unset).
        async with session.get(f"{base}/api/assets/demo/playback") as resp:
            context = await resp.json()
    clear = (DEMO / "video-360p" / "seg-00001.m4s").read_bytes()
    assert len(key) == 16
    assert aes128_decrypt(encrypted, key, iv) == clear
    assert not decrypts_to(encrypted, bytes(16), iv, clear)  # control: another key
    aes = next(s for s in context["key_systems"] if s["name"] == "aes128")
    assert aes["key_url"].startswith(base + "/license/aes128/")


async def test_cached_segment_from_a_memory_file_over_https(tls_origin: RunningOrigin,
                                                            pki: Pki) -> None:
    """A segment large enough to be cached in a memory file (sent by ``sendfile`` over plain
    TCP) goes through the TLS layer instead: its miss and its hit both decrypt to the clear
    segment."""
    base = tls_origin.base
    rel = "video-720p/seg-00002.m4s"
    connector = aiohttp.TCPConnector(ssl=client_context(pki.ca_file))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/hls/demo/aes128/video-720p/index.m3u8") as resp:
            key_uri, iv = segment_key(await resp.text(), "seg-00002.m4s")
        answers = []
        for _ in range(2):  # the miss, then the hit
            async with session.get(f"{base}/hls/demo/aes128/{rel}") as resp:
                assert resp.status == 200
                answers.append(await resp.read())
        async with session.get(base + key_uri) as resp:
            key = await resp.read()
    clear = (DEMO / rel).read_bytes()
    assert len(clear) >= MEMORY_FILE_MIN
    assert [aes128_decrypt(body, key, iv) for body in answers] == [clear, clear]


async def test_handshake_version_and_alpn(tls_origin: RunningOrigin, pki: Pki) -> None:
    context = client_context(pki.ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])  # a browser's offer: h2 is declined
    _, writer = await asyncio.open_connection("127.0.0.1", tls_origin.port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
    finally:
        writer.close()
        await writer.wait_closed()
    # A client that only speaks TLS 1.2 is served too.
    capped = client_context(pki.ca_file)
    capped.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", tls_origin.port, ssl=capped)
    try:
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_every_worker_speaks_tls(tls_origin: RunningOrigin, pki: Pki) -> None:
    workers: set[str] = set()
    for _ in range(32):  # a fresh connection each time: the kernel spreads them
        connector = aiohttp.TCPConnector(ssl=client_context(pki.ca_file), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get(f"{tls_origin.base}/healthz") as resp:
            assert resp.status == 200
            workers.add(resp.headers["X-Origin-Worker"])
    assert len(workers) == 2


async def test_untrusting_client_and_plain_http_fail(tls_origin: RunningOrigin,
                                                     pki: Pki) -> None:
    other = aiohttp.TCPConnector(ssl=client_context(pki.other_ca_file))
    async with aiohttp.ClientSession(connector=other) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{tls_origin.base}/healthz")
    plain = tls_origin.base.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/healthz",
                                   timeout=aiohttp.ClientTimeout(total=10)) as resp:
                await resp.read()
    # Control: the same port still answers HTTPS, so it was the plain request that failed.
    trusted = aiohttp.TCPConnector(ssl=client_context(pki.ca_file))
    async with aiohttp.ClientSession(connector=trusted) as session, \
            session.get(f"{tls_origin.base}/healthz") as resp:
        assert resp.status == 200


async def run_tool(*argv: str) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), FFMPEG_TIMEOUT)
    return proc.returncode or 0, out, err.decode(errors="replace")


async def test_curl_with_the_ca_file(tls_origin: RunningOrigin, pki: Pki) -> None:
    base = tls_origin.base
    rc, playlist, err = await run_tool("curl", "-sS", "--fail", "--cacert", str(pki.ca_file),
                                       f"{base}/hls/demo/aes128/video-360p/index.m3u8")
    assert rc == 0, err
    key_uri, iv = segment_key(playlist.decode(), "seg-00002.m4s")
    rc, segment, err = await run_tool("curl", "-sS", "--fail", "--cacert", str(pki.ca_file),
                                      f"{base}/hls/demo/aes128/video-360p/seg-00002.m4s")
    assert rc == 0, err
    rc, key, err = await run_tool("curl", "-sS", "--fail", "--cacert", str(pki.ca_file),
                                  base + key_uri)
    assert rc == 0, err
    assert aes128_decrypt(segment, key, iv) == (DEMO / "video-360p/seg-00002.m4s").read_bytes()
    # Control: curl trusting another CA refuses the server.
    rc, _, err = await run_tool("curl", "-sS", "--fail", "--cacert", str(pki.other_ca_file),
                                f"{base}/healthz")
    assert rc != 0 and "certificate" in err.lower()


async def framemd5(url: str, ca_file: Path) -> tuple[int, list[str], str]:
    rc, out, err = await run_tool(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-ca_file", str(ca_file), "-tls_verify", "1", "-i", url,
        "-map", "0", "-f", "framemd5", "-")
    frames = [ln for ln in out.decode().splitlines() if ln and not ln.startswith("#")]
    return rc, frames, err


@pytest.mark.ffmpeg
async def test_ffmpeg_plays_aes128_over_https(tls_origin: RunningOrigin, pki: Pki) -> None:
    base = tls_origin.base
    rc, clear, err = await framemd5(f"{base}/hls/demo/clear/master-ts.m3u8", pki.ca_file)
    assert rc == 0, err
    assert len(clear) > 200
    rc, protected, err = await framemd5(f"{base}/hls/demo/aes128/master-ts.m3u8", pki.ca_file)
    assert rc == 0, err
    assert protected == clear
    # Control: ffmpeg verifying against another CA cannot even read the playlist.
    rc, frames, err = await framemd5(f"{base}/hls/demo/aes128/master-ts.m3u8",
                                     pki.other_ca_file)
    assert rc != 0 and not frames
    assert "verification" in err.lower() or "certificate" in err.lower(), err


def serve_once(state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``origin serve`` with ``flags``, expected to stop at startup."""
    cmd = [sys.executable, "-m", "origin", "serve", "--port", "0", "--workers", "2",
           "--media", str(DEMO.parent), "--state-dir", str(state), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=CLI_TIMEOUT,
                          check=False)


def test_mismatched_key_stops_startup_with_a_clear_message(pki: Pki, tmp_path: Path
                                                           ) -> None:
    done = serve_once(tmp_path / "state", "--tls-cert", str(pki.cert_file),
                      "--tls-key", str(pki.other_key_file))
    assert done.returncode != 0
    assert "does not match the certificate" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "listening" not in done.stdout
    # Nothing was started: no licence socket, no metrics folder left behind.
    assert not list((tmp_path / "state").glob("license-*.sock"))


@pytest.mark.parametrize("flags", [("--tls-cert", "{cert}"), ("--tls-key", "{key}")])
def test_cert_and_key_go_together(pki: Pki, tmp_path: Path, flags: tuple[str, str]
                                  ) -> None:
    flag, value = flags
    done = serve_once(tmp_path / "state", flag,
                      value.format(cert=pki.cert_file, key=pki.key_file))
    assert done.returncode == 2
    assert done.stderr.strip() == "origin: --tls-cert and --tls-key go together"


def test_server_context_rules(pki: Pki, tmp_path: Path) -> None:
    context = server_context(TlsFiles(pki.cert_file, pki.key_file))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert context.verify_mode is ssl.CERT_NONE
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()), b"passphrase"))
    cases = {
        encrypted: "is encrypted",
        pki.other_key_file: "does not match the certificate",
        pki.cert_file: "not a PEM certificate chain and its private key",
        tmp_path / "absent.key": "no such file",
    }
    for key_file, message in cases.items():
        with pytest.raises(TlsConfigError, match=message):
            server_context(TlsFiles(pki.cert_file, key_file))


def test_key_file_permissions_warning(pki: Pki, tmp_path: Path) -> None:
    assert key_file_warning(TlsFiles(pki.cert_file, pki.key_file)) is None  # 0600
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.key_file.read_bytes())
    loose.chmod(0o640)
    warning = key_file_warning(TlsFiles(pki.cert_file, loose))
    assert warning is not None and "readable by its group or by others" in warning
    # And origin serve logs it, then serves anyway.
    server = start_origin(DEMO.parent, tmp_path / "state", "--tls-cert", str(pki.cert_file),
                          "--tls-key", str(loose))
    try:
        assert server.base.startswith("https://")
    finally:
        assert server.stop() == 0
    assert "readable by its group or by others (mode 0640)" in server.log_text()
