"""Writes the pickle fixtures of the reader tests (numpy arrays in several protocols
and layouts). Pixel (i, y, x, c) = (i*37 + y*11 + x*5 + c*60) % 256 so the tests can
recompute every value."""
import pickle
import numpy as np

n, s = 4, 8
i, y, x, c = np.meshgrid(np.arange(n), np.arange(s), np.arange(s), np.arange(3), indexing="ij")
hwc = ((i * 37 + y * 11 + x * 5 + c * 60) % 256).astype(np.uint8)  # N x H x W x C
labels = np.array([0, 3, 9, 3], dtype=np.int64)

def dump(name, obj, proto):
    with open(name, "wb") as f:
        pickle.dump(obj, f, protocol=proto)

dump("p2_flat_hwc.pk", {"X": hwc.reshape(n, -1), "y": labels}, 2)
dump("p3_chw.pk", {"X": np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)), "y": labels.astype(np.int32)}, 3)
dump("p4_nhwc.pk", {"X": hwc, "y": (labels + 1).astype(np.uint8)}, 4)
dump("p5_bare_flat_cwh.pk", np.ascontiguousarray(hwc.transpose(0, 3, 2, 1)).reshape(n, -1), 5)
dump("p4_float.pk", {"X": hwc.astype(np.float32), "y": labels}, 4)
dump("p4_no_x.pk", {"images_missing": hwc, "y": labels}, 4)
