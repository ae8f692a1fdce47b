"""Compact JWS (JWT) signing and verification with `cryptography` only.

Access tokens are RS256 JWTs like Entra's; client assertions from MSAL are RS256 (x5t,
SHA-1 thumbprint) or PS256 (x5t#S256). Nothing else is accepted.
"""
from __future__ import annotations

import base64
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JwsError(ValueError):
    """The token is not a well-formed compact JWS or its signature does not verify."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise JwsError("bad base64url") from exc


def sign_rs256(key: rsa.RSAPrivateKey, header: dict, claims: dict) -> str:
    header = {"typ": "JWT", **header, "alg": "RS256"}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url_encode(signature)


def split(token: str) -> tuple[dict, dict, bytes, bytes]:
    """Return (header, claims, signing_input, signature) without verifying anything."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise JwsError("header or claims are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwsError("header or claims are not JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


def verify(token: str, public_key) -> tuple[dict, dict]:
    """Verify an RS256 or PS256 signature with an RSA public key; return (header, claims)."""
    header, claims, signing_input, signature = split(token)
    alg = header.get("alg")
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise JwsError("only RSA keys are supported")
    if alg == "RS256":
        pad = padding.PKCS1v15()
    elif alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        raise JwsError(f"unsupported alg {alg!r}")
    try:
        public_key.verify(signature, signing_input, pad, hashes.SHA256())
    except InvalidSignature as exc:
        raise JwsError("signature does not verify") from exc
    return header, claims


def rsa_jwk(public_key: rsa.RSAPublicKey, kid: str) -> dict:
    numbers = public_key.public_numbers()

    def _int(value: int) -> str:
        return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "use": "sig", "kid": kid, "alg": "RS256",
            "n": _int(numbers.n), "e": _int(numbers.e)}
