"""The self-signed bootstrap certificate nginx serves until certbot has a real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "certbot" / "bootstrap-certificate.sh"


def test_the_bootstrap_certificate_is_a_server_certificate_not_a_ca(tmp_path: Path) -> None:
    """The fault: openssl's defaults made the leaf CA:TRUE, which sslyze refuses."""
    if shutil.which("openssl") is None:
        skip_or_fail_in_ci("openssl is not installed (the certbot image has it)")
    subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], "DOMAIN": "shop.example.test",
             "BOOTSTRAP_DIR": str(tmp_path)},
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    folder = tmp_path / "shop.example.test"
    assert sorted(p.name for p in folder.iterdir()) == ["fullchain.pem", "privkey.pem"]
    certificate = x509.load_pem_x509_certificate((folder / "fullchain.pem").read_bytes())
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["shop.example.test"]
    assert oct((folder / "privkey.pem").stat().st_mode & 0o777) == "0o600"
