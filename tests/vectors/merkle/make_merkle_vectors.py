"""Write the RFC 6962 / RFC 9162 Merkle known-answer vectors in this directory.

Source of the happy-path values (leaves, roots for sizes 1-8, inclusion and consistency
proofs): transparency-dev/merkle ``proof/verify_test.go`` (Apache-2.0), the published
RFC 6962 test data of Certificate Transparency. Corruptions are derived mechanically, named
after what they do (index+1, size*2, bitflip@proof[1], swapped-roots, ...), and each one must
be rejected. Run: ``python -m tests.vectors.merkle.make_merkle_vectors``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = "transparency-dev/merkle proof/verify_test.go (RFC 6962 test data)"
LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
          "606162636465666768696a6b6c6d6e6f"]
ROOTS = {  # tree size -> root
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
INCLUSION = [  # (leaf index, tree size, proof); the Go file numbers leaves from 1
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
SOME_HASH = "abacaba000000000000000000000000000000000000000000060061e00123456"


def leaf_hash(leaf_hex: str) -> str:
    return hashlib.sha256(b"\x00" + bytes.fromhex(leaf_hex)).hexdigest()


def bitflip(value: str, bit: int) -> str:
    raw = bytearray.fromhex(value)
    raw[0] ^= 1 << bit
    return raw.hex()


def inclusion_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = []
    for index, size, proof in INCLUSION:
        base = {"leaf_index": index, "tree_size": size, "leaf_hash": leaf_hash(LEAVES[index]),
                "proof": proof, "root": ROOTS[size]}
        name = f"leaf {index} of {size}"
        cases.append({"desc": f"{name}: published proof", **base, "want_error": False})
        variants: list[tuple[str, dict[str, object]]] = [
            ("index-1", {"leaf_index": index - 1}), ("index+1", {"leaf_index": index + 1}),
            ("index^2", {"leaf_index": index ^ 2}), ("size*2", {"tree_size": size * 2}),
            ("size/2", {"tree_size": size // 2}),
            ("wrong-leaf", {"leaf_hash": b"WrongLeaf".hex()}),
            ("other-leaf", {"leaf_hash": leaf_hash("ff")}),
            ("empty-root", {"root": ROOTS[0]}), ("random-root", {"root": SOME_HASH}),
            ("trailing-garbage", {"proof": [*proof, ""]}),
            ("trailing-root", {"proof": [*proof, ROOTS[size]]}),
            ("preceding-garbage", {"proof": ["", *proof]}),
            ("preceding-root", {"proof": [ROOTS[size], *proof]}),
        ]
        variants += [(f"bitflip@proof[{i}]", {"proof": [bitflip(h, 3) if j == i else h
                                                          for j, h in enumerate(proof)]})
                     for i in range(len(proof))]
        if proof:
            variants.append(("truncated-proof", {"proof": proof[:-1]}))
        if len(proof) > 1:
            variants.append(("inserted-hash", {"proof": [proof[0], SOME_HASH, *proof[1:]]}))
        for tag, change in variants:
            cases.append({"desc": f"{name}: {tag}", **base, **change, "want_error": True})
    return cases


def consistency_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = []
    for old, new, proof in CONSISTENCY:
        base = {"old_size": old, "new_size": new, "old_root": ROOTS[old],
                "new_root": ROOTS[new], "proof": proof}
        name = f"{old} -> {new}"
        cases.append({"desc": f"{name}: published proof", **base, "want_error": False})
        if not proof:
            continue
        variants: list[tuple[str, dict[str, object]]] = [
            ("old-1", {"old_size": old - 1}), ("old+1", {"old_size": old + 1}),
            ("old^2", {"old_size": old ^ 2}), ("new*2", {"new_size": new * 2}),
            ("new/2", {"new_size": new // 2}),
            ("wrong-old-root", {"old_root": SOME_HASH}),
            ("wrong-new-root", {"new_root": SOME_HASH}),
            ("swapped-roots", {"old_root": ROOTS[new], "new_root": ROOTS[old]}),
            ("empty-proof", {"proof": []}),
            ("trailing-garbage", {"proof": [*proof, ""]}),
            ("trailing-old-root", {"proof": [*proof, ROOTS[old]]}),
            ("trailing-new-root", {"proof": [*proof, ROOTS[new]]}),
            ("preceding-garbage", {"proof": ["", *proof]}),
            ("preceding-old-root", {"proof": [ROOTS[old], *proof]}),
            ("preceding-new-root", {"proof": [ROOTS[new], *proof]}),
            ("preceding-proof[0]", {"proof": [proof[0], *proof]}),
            ("truncated-proof", {"proof": proof[:-1]}),
        ]
        variants += [(f"bitflip@proof[{i}]", {"proof": [bitflip(h, 4) if j == i else h
                                                          for j, h in enumerate(proof)]})
                     for i in range(len(proof))]
        for tag, change in variants:
            cases.append({"desc": f"{name}: {tag}", **base, **change, "want_error": True})
    cases += [
        {"desc": "0 -> 0: empty trees", "old_size": 0, "new_size": 0, "old_root": ROOTS[0],
         "new_root": ROOTS[0], "proof": [], "want_error": False},
        {"desc": "0 -> 5: nothing to prove", "old_size": 0, "new_size": 5,
         "old_root": ROOTS[0], "new_root": ROOTS[5], "proof": [], "want_error": False},
        {"desc": "0 -> 5: proof must be empty", "old_size": 0, "new_size": 5,
         "old_root": ROOTS[0], "new_root": ROOTS[5], "proof": [ROOTS[0]], "want_error": True},
        {"desc": "5 -> 5: different roots", "old_size": 5, "new_size": 5,
         "old_root": ROOTS[5], "new_root": ROOTS[6], "proof": [], "want_error": True},
        {"desc": "2 -> 1: time travel", "old_size": 2, "new_size": 1, "old_root": ROOTS[2],
         "new_root": ROOTS[1], "proof": [], "want_error": True},
    ]
    return cases


def main() -> None:
    roots = [{"desc": f"root of the first {n} leaves", "tree_size": n, "root": ROOTS[n],
              "want_error": False} for n in range(9)]
    for name, cases in (("roots", roots), ("inclusion", inclusion_cases()),
                        ("consistency", consistency_cases())):
        doc = {"source": SOURCE, "leaves": LEAVES, "cases": cases}
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
