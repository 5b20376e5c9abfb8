#!/usr/bin/env python3
"""Times the numpy peer (../shared/peer) on the same work as benches/throughput.rs:
one float32 cost+grad evaluation on an m x 192 matrix for each H, and pooled
encoding of 96x96 images at each step. Prints one JSON object per measurement."""
import argparse
import json
import os
import sys
import time

import numpy as np


def best_of(reps, f):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", default=os.path.join(os.path.dirname(__file__), "../../shared/peer"))
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--hidden", default="25,100,400")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--steps", default="8,4,2,1")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.peer))
    import peer  # noqa: E402

    m = a.rows
    i, j = np.meshgrid(np.arange(m), np.arange(192), indexing="ij")
    X = (0.1 + 0.8 * (((i * 131 + j * 71) % 257) / 257.0)).astype(np.float32)
    for h in [int(v) for v in a.hidden.split(",")]:
        ae = peer.SparseAE(192, [h], lam=1e-5, beta=3.0, rho=0.01, dtype=np.float32)
        theta = ae.init_theta(np.random.default_rng(1))
        t = best_of(a.reps, lambda: ae.cost_grad(theta, X))
        # The peer makes one forward pass (5 GEMMs); count the flops of the work done.
        print(json.dumps({"bench": "peer_loss_gradient", "rows": m, "hidden": h,
                          "seconds": round(t, 4), "patches_per_s": round(m / t),
                          "gflops": round(10.0 * m * 192 * h / t / 1e9, 2)}))
    n = a.images
    idx = np.arange(n * 96 * 96 * 3)
    imgs = ((idx * 7 + idx // 300) % 251).astype(np.uint8).reshape(n, 96, 96, 3)
    for h in [int(v) for v in a.hidden.split(",")]:
        ae = peer.SparseAE(192, [h], lam=1e-5, beta=3.0, rho=0.01, dtype=np.float32)
        ae.theta = ae.init_theta(np.random.default_rng(1))
        norm = peer.UfldlNorm()
        norm.pstd = 0.3
        for step in [int(s) for s in a.steps.split(",")]:
            per = len(peer.grid_positions(96, step)) ** 2
            t = best_of(a.reps, lambda: peer.features_pool(imgs, ae, norm, step))
            print(json.dumps({"bench": "peer_encode", "images": n, "step": step, "hidden": h,
                              "seconds": round(t, 4), "patches_per_s": round(n * per / t),
                              "gflops": round(2.0 * n * per * 192 * h / t / 1e9, 2)}))


if __name__ == "__main__":
    main()
