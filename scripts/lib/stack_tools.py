"""Small Python steps of scripts/stack-up.sh (run with the venv's python).

    stack_tools.py keys    - create the dev RS256 key pair and its JWKS once
    stack_tools.py tls     - create the local CA and the S3 gateway's TLS certificate once
    stack_tools.py setup   - wait for Kafka (metadata request) and S3 (ListBuckets), then create the topics,
                             the service's bucket (versioned: earlier save objects stay recoverable) and the
                             backup bucket if missing

Configuration comes from the environment that scripts/lib/env.sh exports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ensure_keys(private_key_file: str, jwks_file: str, kid: str) -> bool:
    """Creates the key pair and the JWKS unless both exist. Returns True when something was written."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if os.path.exists(private_key_file) and os.path.exists(jwks_file):
        return False
    if os.path.exists(private_key_file):
        with open(private_key_file, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        os.makedirs(os.path.dirname(private_key_file) or ".", exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    numbers = key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": kid,
                "alg": "RS256",
                "use": "sig",
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
        ]
    }
    os.makedirs(os.path.dirname(jwks_file) or ".", exist_ok=True)
    tmp = jwks_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(jwks, f, indent=2)
        f.write("\n")
    os.replace(tmp, jwks_file)
    return True


def ensure_tls(directory: str, days: int = 3650) -> bool:
    """A local CA (ca.pem) and a certificate it signed for 127.0.0.1 / localhost (cert.pem, key.pem), for
    the S3 gateway's HTTPS port (pgBackRest speaks S3 only over TLS and verifies the certificate against
    ca.pem). Created once; returns True when something was written."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem")}
    if all(os.path.exists(p) for p in paths.values()):
        return False
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, *extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "library local stack CA")])
    ca = certificate(
        ca_name,
        ca_name,
        ca_key.public_key(),
        ca_key,
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
    )
    leaf = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        ca_name,
        key.public_key(),
        ca_key,
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.SubjectAlternativeName(
                # pgBackRest matches the endpoint against DNS names only, so 127.0.0.1 is one too
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("127.0.0.1"),
                    x509.DNSName("localhost"),
                ]
            ),
            False,
        ),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(paths["key.pem"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    for name, cert in (("cert.pem", leaf), ("ca.pem", ca)):
        with open(paths[name], "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return True


async def _kafka(bootstrap: str, topics: list[str], partitions: int, deadline: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    last_error: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
                for topic, code, message in response.topic_errors:
                    if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS (a concurrent stack-up)
                        raise RuntimeError(f"create topic {topic}: error {code} {message}")
                print(f"kafka: created topics {', '.join(missing)}")
            return
        except Exception as exc:  # the broker may still be starting: retry until the deadline
            last_error = exc
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
    raise RuntimeError(f"kafka at {bootstrap} did not answer a metadata request: {last_error!r}")


def _s3(deadline: float) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("S3_REGION", "us-east-1"),
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    bucket, backups = os.environ["S3_BUCKET"], os.environ["BACKUP_S3_BUCKET"]
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for name in (bucket, backups):
                if name not in names:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket=name)
                    print(f"s3: created bucket {name}")
            # Versioning: an overwritten or deleted save object keeps its earlier versions in the store
            # (the save service's own version history stays the first line of defence).
            if client.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
                client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
                print(f"s3: enabled versioning on {bucket}")
            return
        except Exception as exc:  # the filer/S3 gateway may still be starting: retry until the deadline
            last_error = exc
            time.sleep(0.2)
    raise RuntimeError(f"S3 at {os.environ['S3_ENDPOINT_URL']} did not answer ListBuckets: {last_error!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["keys", "tls", "setup"])
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("STACK_TIMEOUT", "60")))
    args = parser.parse_args()

    if args.command == "keys":
        if ensure_keys(
            os.environ["JWT_PRIVATE_KEY_FILE"],
            os.environ["JWT_JWKS_FILE"],
            os.environ.get("JWT_KID", "dev-1"),
        ):
            print(f"jwt: wrote {os.environ['JWT_PRIVATE_KEY_FILE']} and {os.environ['JWT_JWKS_FILE']}")
        return 0
    if args.command == "tls":
        if ensure_tls(os.environ["S3_TLS_DIR"]):
            print(f"tls: wrote the local CA and the S3 certificate in {os.environ['S3_TLS_DIR']}")
        return 0

    deadline = time.monotonic() + args.timeout
    failed = False
    topics = [t.strip() for t in os.environ.get("KAFKA_TOPICS", "").split(",") if t.strip()]
    try:
        asyncio.run(
            _kafka(
                os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                topics,
                int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "3")),
                deadline,
            )
        )
    except Exception as exc:
        print(f"ERROR kafka: {exc}", file=sys.stderr)
        failed = True
    try:
        _s3(deadline)
    except Exception as exc:
        print(f"ERROR s3: {exc}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
