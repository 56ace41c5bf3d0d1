#!/usr/bin/env python3
"""Writes a synthetic two-class LIBSVM data set to stdout: ROWS examples
over FEATURES binary features, NNZ distinct features per row, drawn with
a skewed popularity (index = 1 + floor(FEATURES * u^3), u uniform), as in
text data where a few words are common and most are rare; labels from a
sparse linear teacher plus noise. Deterministic for a given SEED.

usage: gen_sparse_libsvm.py ROWS FEATURES NNZ SEED > FILE
"""
import random
import sys


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[-1])
    rows, features, nnz, seed = (int(v) for v in sys.argv[1:])
    if rows < 1 or features < nnz or nnz < 1:
        sys.exit("gen_sparse_libsvm: need ROWS >= 1 and FEATURES >= NNZ >= 1")
    rng = random.Random(seed)
    teacher = {}
    out = sys.stdout
    for _ in range(rows):
        cols = set()
        while len(cols) < nnz:
            cols.add(1 + int(features * rng.random() ** 3) % features)
        cols = sorted(cols)
        score = rng.gauss(0.0, 0.5)
        for j in cols:
            w = teacher.get(j)
            if w is None:
                w = teacher[j] = rng.gauss(0.0, 1.0)
            score += w
        label = 1 if score > 0 else -1
        out.write("%d %s\n" % (label, " ".join("%d:1" % j for j in cols)))


if __name__ == "__main__":
    main()
