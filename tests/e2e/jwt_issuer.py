"""JWT access tokens for the local-validation cases, signed with the `openssl` command line
tool (Python's standard library has no RSA, ECDSA or Ed25519).

    issuer = JwtIssuer(workdir)            # makes an RSA, an EC P-256 and an Ed25519 key
    issuer.jwks(["rsa", "ec", "ed"])        # the public JWK Set, kids "rsa-1", "ec-1", "ed-1"
    issuer.token("ec", {"sub": ...})        # ES256-signed compact JWS
    issuer.forged_none(claims)              # alg "none", empty signature
    issuer.forged_hmac(claims)              # HS256 keyed with the RSA public key PEM

Keys live in the run's temporary directory and protect nothing.
"""

import base64
import hashlib
import hmac
import json
import re
import subprocess
from pathlib import Path

ALGS = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(args, data=None):
    p = subprocess.run(["openssl"] + args, input=data, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args[:2]), p.stderr.decode()[-300:]))
    return p.stdout


def _der_ints(der: bytes):
    """(r, s) of a DER ECDSA signature: SEQUENCE { INTEGER r, INTEGER s }."""
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = []
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out.append(int.from_bytes(der[i + 2:i + 2 + n], "big"))
        i += 2 + n
    return out


class JwtIssuer:
    def __init__(self, directory, prefix=""):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.keys = {}
        specs = {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                 "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                 "ed": ["-algorithm", "ed25519"]}
        for name, spec in specs.items():
            key = self.dir / ("%s%s.key" % (prefix, name))
            _openssl(["genpkey"] + spec + ["-out", str(key)])
            pub = self.dir / ("%s%s.pub.pem" % (prefix, name))
            _openssl(["pkey", "-in", str(key), "-pubout", "-out", str(pub)])
            self.keys[name] = (key, pub)

    def kid(self, name):
        return "%s%s-1" % (self.prefix, name)

    def public_pem(self, name) -> str:
        return self.keys[name][1].read_text()

    def jwk(self, name):
        key, pub = self.keys[name]
        der = _openssl(["pkey", "-pubin", "-in", str(pub), "-outform", "DER"])
        base = {"kid": self.kid(name), "use": "sig", "alg": ALGS[name]}
        if name == "rsa":
            text = _openssl(["rsa", "-pubin", "-in", str(pub), "-modulus", "-noout"]).decode()
            n = bytes.fromhex(re.search(r"Modulus=([0-9A-F]+)", text).group(1))
            return dict(base, kty="RSA", n=b64u(n), e=b64u((65537).to_bytes(3, "big")))
        if name == "ec":
            point = der[-65:]          # 0x04 || x || y
            return dict(base, kty="EC", crv="P-256", x=b64u(point[1:33]), y=b64u(point[33:]))
        return dict(base, kty="OKP", crv="Ed25519", x=b64u(der[-32:]))

    def jwks(self, names=("rsa", "ec", "ed")):
        return {"keys": [self.jwk(n) for n in names]}

    def _sign(self, name, data: bytes) -> bytes:
        key = str(self.keys[name][0])
        if name == "rsa":
            return _openssl(["dgst", "-sha256", "-sign", key], data)
        if name == "ec":
            r, s = _der_ints(_openssl(["dgst", "-sha256", "-sign", key], data))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        src = self.dir / "to-sign.bin"
        src.write_bytes(data)
        return _openssl(["pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", str(src)])

    def token(self, name, claims, kid=None, header_extra=None):
        header = {"alg": ALGS[name], "typ": "at+jwt", "kid": kid or self.kid(name)}
        header.update(header_extra or {})
        signing_input = (b64u(json.dumps(header).encode()) + "."
                         + b64u(json.dumps(claims).encode()))
        return signing_input + "." + b64u(self._sign(name, signing_input.encode()))

    @staticmethod
    def forged_none(claims):
        return (b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
                + b64u(json.dumps(claims).encode()) + ".")

    def forged_hmac(self, claims):
        """The classic key-confusion forgery: HS256 with the RSA public key as the secret."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid("rsa")}
        signing_input = (b64u(json.dumps(header).encode()) + "."
                         + b64u(json.dumps(claims).encode()))
        mac = hmac.new(self.public_pem("rsa").encode(), signing_input.encode(),
                       hashlib.sha256).digest()
        return signing_input + "." + b64u(mac)
