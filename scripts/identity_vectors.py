"""Cross-implementation vectors from a second, independent Ed25519 stack.

Python's `cryptography` (OpenSSL underneath) writes an identity file in the
same shape as AgentChat 0.3.0, signs the texts Node produced in
node_vectors.json, and checks that it reads the workbench-written identity
and reproduces Node's signatures with it (Ed25519 is deterministic).

usage: python3 scripts/identity_vectors.py OUT_DIR [WORKBENCH_IDENTITY]
Run through scripts/identity_vectors.sh.
"""

import base64
import datetime
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def agent_id(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()[:8]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python3 scripts/identity_vectors.py OUT_DIR [WORKBENCH_IDENTITY]")
    out = sys.argv[1]
    node = load(os.path.join(out, "node_vectors.json"))
    texts = [s["signed"] for s in node["signatures"]]

    key = Ed25519PrivateKey.generate()
    pubkey = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    privkey = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    identity = {"name": "python-vector", "pubkey": pubkey, "privkey": privkey,
                "created": created.replace("+00:00", "Z")}
    with open(os.path.join(out, "python_identity.json"), "w", encoding="utf-8") as f:
        json.dump(identity, f, indent=2)

    sigs = [{"signed": t, "sig": base64.b64encode(key.sign(t.encode())).decode()} for t in texts]
    with open(os.path.join(out, "python_vectors.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "python cryptography", "identity_file": "python_identity.json",
                   "agent_id": agent_id(pubkey), "signatures": sigs}, f, indent=2, ensure_ascii=False)
        f.write("\n")

    # Node's key, read by Python: the same signatures come out.
    nid = load(os.path.join(out, node["identity_file"]))
    nkey = serialization.load_pem_private_key(nid["privkey"].encode(), password=None)
    for s in node["signatures"]:
        assert base64.b64encode(nkey.sign(s["signed"].encode())).decode() == s["sig"], s["signed"]

    if len(sys.argv) > 2:
        wb = load(sys.argv[2])
        wkey = serialization.load_pem_private_key(wb["privkey"].encode(), password=None)
        derived = wkey.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        assert derived == wb["pubkey"], "workbench identity: pubkey does not match privkey"
        nsw = load(os.path.join(out, "node_signs_workbench.json"))
        for s in nsw["signatures"]:
            assert base64.b64encode(wkey.sign(s["signed"].encode())).decode() == s["sig"], s["signed"]
    print("python: vectors written and cross-checked", file=sys.stderr)


if __name__ == "__main__":
    main()
