"""Independent check of the tmca store format with zarr-python 3.

usage: zarr_interop.py STORE_WRITTEN_BY_TMCA OUTPUT_STORE

1. Reads the tmca-written store with zarr-python, with every warning turned into an error,
   and checks the schema (arrays, shapes, data types, attributes, every chunk file present,
   zstd frames with checksums) and the values themselves, by the formulas the Rust test wrote
   them with (so a layout bug shared by tmca's writer and reader cannot cancel out).
2. Writes the same data as a new store with zarr-python (different chunking, no sharding,
   zarr-python's default codecs, every chunk written as schema 2 asks) for tmca to read back;
   the Rust test compares the two.
"""
import json
import os
import sys
import warnings

import numpy as np
import zarr


def main(src: str, dst: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = zarr.open_group(src, mode="r")
        meta = dict(g.attrs)["tmca"]
        assert meta["schema_version"] == 2, meta
        assert meta["complete"] is True, meta
        n, c, h, w = meta["num_samples"], meta["channels"], meta["height"], meta["width"]
        image, mask = g["image"], g["mask"]
        assert image.shape == (n, c, h, w) and image.dtype == np.uint8, (image.shape, image.dtype)
        assert mask.shape == (n, h, w) and mask.dtype == np.uint8, (mask.shape, mask.dtype)
        assert image.shards is not None and image.chunks == (1, c, h, w), (image.shards, image.chunks)
        imgs, masks = image[:], mask[:]
        assert set(np.unique(masks)) <= {0, 1}
        split = g["split"][:]
        assert split.dtype == np.uint8 and set(np.unique(split)) <= {0, 1, 2}
        reports = [str(r) for r in g["report"][:]]
        names = [str(s) for s in g["source_name"][:]]
        assert len(reports) == len(names) == n and all(r.strip() for r in reports)
        # The values, from the formulas of tests/zarr_python.rs's write_store.
        i, ch, y, x = np.meshgrid(np.arange(n), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
        assert np.array_equal(imgs, ((((ch * h + y) * w + x) * 3 + i * 29) % 256).astype(np.uint8))
        i, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
        assert np.array_equal(masks, ((y + i) % 4 == 0).astype(np.uint8))
        assert split.tolist() == [k % 3 for k in range(n)], split
        assert names == [f"case_{k}.png" for k in range(n)], names
        assert reports == [f"Ünïcode report {k}: one infected areas, lower left lung.." for k in range(n)]
        # Schema 2: every chunk file exists, and zstd carries its checksum.
        for key in ("image", "mask", "split", "report", "source_name"):
            arr = g[key]
            per = (arr.shards or arr.chunks)[0]
            for k in range(-(-n // per)):
                rest = "/0" * (arr.ndim - 1)
                path = os.path.join(src, key, "c", f"{k}{rest}")
                assert os.path.isfile(path), path
            with open(os.path.join(src, key, "zarr.json")) as f:
                codecs = json.dumps(json.load(f)["codecs"])
            assert '"checksum": true' in codecs, (key, codecs)
        # Random access of one sample reads one subchunk.
        k = n // 2
        assert np.array_equal(image[k], imgs[k]) and np.array_equal(mask[k], masks[k])

    out = zarr.open_group(dst, mode="w")
    meta = dict(meta)
    out.attrs["tmca"] = meta
    every = {"write_empty_chunks": True}
    out.create_array("image", data=imgs, chunks=(2, c, h, w), config=every)
    out.create_array("mask", data=masks, chunks=(3, h, w), config=every)
    out.create_array("split", data=split, chunks=(max(1, n // 2),), config=every)
    with warnings.catch_warnings():
        # Writing variable-length strings may warn that the `string` data type is not yet in the
        # Zarr v3 core spec; reading (above) must not warn.
        warnings.simplefilter("ignore")
        for key, values, chunk in (("report", reports, max(1, n // 3)), ("source_name", names, n)):
            arr = out.create_array(key, shape=(n,), dtype=str, chunks=(chunk,), config=every)
            arr[:] = np.array(values, dtype=object)
    for key in ("report", "source_name"):
        assert out[key].metadata.data_type.to_json(zarr_format=3) == "string", out[key].metadata
    print(f"zarr-python {zarr.__version__}: read {n} samples of {c}x{h}x{w} from {src}, wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
