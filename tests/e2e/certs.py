"""Throw-away test PKI for the https SSO cases, made with the `openssl` command line tool.

make_ca(dir, name)                      -> (cert.pem, key.pem) of a self-signed CA
make_leaf(dir, name, ca, sans)          -> (cert.pem, key.pem) of a server certificate
                                           signed by `ca`, with the given subjectAltNames
                                           ("IP:127.0.0.1", "DNS:localhost", ...)

Certificates are X.509 v3 with the extensions a strict verifier (rustls / webpki) wants:
the CA has basicConstraints CA:TRUE and keyCertSign, the leaf has CA:FALSE, serverAuth
and its names in subjectAltName. EC P-256 keys, valid from yesterday for two days.
"""

import shutil
import subprocess
from pathlib import Path


class CertError(Exception):
    pass


def openssl_path():
    return shutil.which("openssl")


def _run(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise CertError("openssl %s failed: %s" % (" ".join(args[:2]), p.stderr.strip()[-400:]))


def _key(path, cwd):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", str(path)], cwd)


def make_ca(directory, name):
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = d / ("%s.key" % name)
    cert = d / ("%s.pem" % name)
    ext = d / ("%s.ext" % name)
    ext.write_text("[v3]\nbasicConstraints = critical, CA:TRUE\n"
                   "keyUsage = critical, keyCertSign, cRLSign\n"
                   "subjectKeyIdentifier = hash\n")
    _key(key, d)
    _run(["req", "-new", "-x509", "-key", str(key), "-out", str(cert), "-days", "2",
          "-subj", "/CN=sso-auth e2e %s" % name, "-config", str(ext), "-extensions", "v3",
          "-sha256"], d)
    return cert, key


def make_leaf(directory, name, ca, sans):
    d = Path(directory)
    ca_cert, ca_key = ca
    key = d / ("%s.key" % name)
    csr = d / ("%s.csr" % name)
    cert = d / ("%s.pem" % name)
    ext = d / ("%s.ext" % name)
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectAltName = %s\n" % ", ".join(sans))
    cn = sans[0].split(":", 1)[1]
    _key(key, d)
    _run(["req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=%s" % cn], d)
    _run(["x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", "2", "-sha256",
          "-extfile", str(ext)], d)
    return cert, key
