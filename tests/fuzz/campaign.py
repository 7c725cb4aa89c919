"""Mutated-checkpoint and garbage-file campaigns (issue 17), each case run in a worker subprocess.

    python tests/fuzz/campaign.py checkpoints --n 10000 --out tests/fuzz/results/checkpoints.json
    python tests/fuzz/campaign.py garbage --n 10000 --out tests/fuzz/results/garbage.json

A worker process reads one file after another with the C++ reader (``checkpoint_summary``: zip checks,
``torch::pickle_load``, checksums) and, when that accepts it, loads it into a model with Python's
``load_checkpoint``; it answers one JSON line per file; the parent gives each
file ``--timeout`` seconds, so a case that kills the worker counts as a crash and one that does not answer
as a hang (the worker is restarted either way). Outcomes per case:

- ``clean_error``: ValueError / TypeError, one line of at most 1,000 characters, the model untouched;
- ``long_message``: a clean error type whose message is longer or has several lines;
- ``unclean_error``: any other exception type (RuntimeError, KeyError, ...), or the model changed by a failed load;
- ``silent_accept``: loaded without error though the file differs and the model's tensors changed
  (checkpoints) -- the failure issue 17 is about;
- ``accepted_same``: loaded and the model's tensors equal the original's (the mutation hit bytes that
  carry no weight: zip padding, a stored CRC, metadata such as the epoch);
- ``accepted`` (garbage): a reader returned data for a garbage file (a mutated PNG that still decodes is
  a valid image: counted, not a failure);
- ``crash`` / ``hang``.

Mutations are seeded (``--seed``) so a campaign is reproducible; the corpus seeds are built from the
library itself (a checkpoint of a small osteonet model, a PNG, a NIfTI, a DICOM file, a manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
OUTCOMES = ("clean_error", "long_message", "unclean_error", "silent_accept", "accepted_same", "accepted", "crash", "hang")


# --------------------------------------------------------------------------------------------- the worker
def _worker(kind: str, original: str) -> None:
    """Reads file paths on stdin, answers {"outcome", "error", "message"} per line on stdout."""
    import warnings

    import torch

    import osteonet
    from osteonet.train import load_checkpoint

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    model = _fuzz_model(osteonet)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    if kind == "checkpoints":
        load_checkpoint(original, model)  # the intact file loads
    for line in sys.stdin:
        path = line.strip()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(reference[k])
        out: Dict[str, Any]
        cpp = _cpp_read(osteonet, path) if path.endswith(".pt") else None
        if cpp is not None and cpp.get("outcome") != "ok":
            sys.stdout.write(json.dumps(cpp) + "\n")
            sys.stdout.flush()
            continue
        try:
            if kind == "checkpoints" or path.endswith(".pt"):
                load_checkpoint(path, model)
            else:
                _read_garbage(osteonet, path)
            same = all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
            if kind == "checkpoints":
                out = {"outcome": "accepted_same" if same else "silent_accept"}
            else:
                out = {"outcome": "accepted" if same else "silent_accept"}
        except Exception as e:  # noqa: BLE001  (classified, never raised)
            msg = str(e)
            touched = not all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
            clean = isinstance(e, (ValueError, TypeError)) and not touched
            long = "\n" in msg or len(msg) > 1000
            outcome = ("long_message" if long else "clean_error") if clean else "unclean_error"
            out = {"outcome": outcome, "error": type(e).__name__, "message": msg[:300]}
            if cpp is not None and "corrupted" in msg:  # the C++ reader took what Python's checksums refuse
                out = {"outcome": "silent_accept", "error": "C++ read_checkpoint accepted it", "message": msg[:300]}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def _cpp_read(osteonet, path: str) -> Dict[str, Any]:
    """The C++ reader (read_checkpoint: zip checks, torch::pickle_load, checksums) on the same file: "ok", or
    the outcome of its error (a clean error ends the case: the file is refused)."""
    try:
        osteonet.train.checkpoint_summary(path)
        return {"outcome": "ok"}
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        clean = isinstance(e, (ValueError, TypeError))
        outcome = ("long_message" if "\n" in msg or len(msg) > 1000 else "clean_error") if clean else "unclean_error"
        return {"outcome": outcome, "error": "C++ " + type(e).__name__, "message": msg[:300]}


def _fuzz_model(osteonet):
    import torch

    # MobileNetV2: 314 tensors (a long pickle to damage) in a 9 MB file, so 10,000 cases fit in well under
    # an hour on one core (resnet18's 45 MB file took four times as long per case for the same structure).
    torch.manual_seed(0)
    return osteonet.create_model("mobilenet_v2", num_classes=3)


def _read_garbage(osteonet, path: str) -> None:
    from osteonet import io

    if path.endswith(".csv"):
        io.read_manifest(os.path.dirname(path), check_files=False)
    elif path.endswith(".series"):
        io.read_dicom_series(path)
    else:
        io.read_volume(path)


# --------------------------------------------------------------------------------------------- the parent
class Worker:
    def __init__(self, kind: str, original: str) -> None:
        self.args = [sys.executable, os.path.abspath(__file__), "_worker", kind, original]
        self.proc = None
        self.start()

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def run(self, path: str, timeout: float) -> Dict[str, Any]:
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.start()
            return {"outcome": "crash", "error": "worker gone"}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.start()
                return {"outcome": "hang"}
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:  # the worker died on this case
                    code = self.proc.wait()
                    self.start()
                    return {"outcome": "crash", "error": f"exit status {code}"}
                return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _mutate(data: bytes, rng: random.Random, regions: Dict[str, List[Tuple[int, int]]]) -> Tuple[bytes, str]:
    """One mutation of ``data``; ``regions``: (start, end) byte ranges by kind ("payload": the stored tensors,
    "pickle": the pickled dict, "directory": the zip's central directory) for targeted flips."""
    b = bytearray(data)
    kind = rng.choice(["flip_payload", "flip_payload", "flip_pickle", "flip_pickle", "flip_directory", "flip_any",
                       "truncate", "zero_run", "insert", "delete", "duplicate", "byte_set"])
    region = regions.get(kind[len("flip_"):]) if kind.startswith("flip_") else None
    if region:
        s, e = rng.choice(region)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(s, e)
            b[i] ^= 1 << rng.randrange(8)
    elif kind.startswith("flip_"):
        kind = "flip_any"
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    elif kind == "zero_run":
        i = rng.randrange(len(b))
        n = rng.randint(1, 256)
        b[i:i + n] = bytes(len(b[i:i + n]))
    elif kind == "insert":
        i = rng.randrange(len(b))
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "delete":
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 64)]
    elif kind == "duplicate":
        i = rng.randrange(len(b))
        b[i:i] = b[i:i + rng.randint(1, 512)]
    else:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
    return bytes(b), kind


def _regions(path: str) -> Dict[str, List[Tuple[int, int]]]:
    """Byte ranges inside a PyTorch zip checkpoint: the tensor records (``<archive>/data/<n>``), the pickle
    (``data.pkl``) and the central directory."""
    import zipfile

    out: Dict[str, List[Tuple[int, int]]] = {"payload": [], "pickle": [], "directory": []}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if info.file_size == 0:
                continue
            f.seek(info.header_offset + 26)  # the local header: 30 bytes + name + extra, then the data
            n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
            start = info.header_offset + 30 + n + m
            if "/data/" in info.filename:
                out["payload"].append((start, start + info.file_size))
            elif info.filename.endswith("data.pkl"):
                out["pickle"].append((start, start + info.file_size))
        end = max(i.header_offset for i in z.infolist())
    with open(path, "rb") as f:
        data = f.read()
    first = data.find(b"PK\x01\x02", end)  # the central directory follows the last local record
    if first >= 0:
        out["directory"].append((first, len(data)))
    return out


def _seed_checkpoint(folder: str) -> str:
    import torch

    import osteonet
    from osteonet.train import save_checkpoint

    model = _fuzz_model(osteonet)
    path = os.path.join(folder, "seed.pt")
    save_checkpoint(path, model, epoch=1)
    return path


def _seed_files(folder: str) -> Dict[str, bytes]:
    """One valid file of each format the readers take (the garbage campaign mutates them or replaces them)."""
    import nibabel as nib
    import numpy as np
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(os.path.join(folder, "s.png"))
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(os.path.join(folder, "s.jpg"))
    nib.save(nib.Nifti1Image(rng.random((8, 8, 4)).astype(np.float32), np.eye(4)), os.path.join(folder, "s.nii.gz"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(os.path.join(folder, "s.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns = "CT", 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = rng.integers(-1000, 1000, (8, 8)).astype(np.int16).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(os.path.join(folder, "s.dcm"), write_like_original=False)
    seeds = {ext: open(os.path.join(folder, "s" + ext), "rb").read() for ext in (".png", ".jpg", ".nii.gz", ".dcm")}
    seeds[".nii"] = nib.Nifti1Image(rng.random((4, 4, 2)).astype(np.float32), np.eye(4)).to_bytes()
    seeds[".series"] = seeds[".dcm"]
    seeds[".csv"] = b"path,label\na.png,1\nb.png,0\n"
    return seeds


def run_campaign(kind: str, n: int, seed: int, timeout: float, log=print) -> Dict[str, Any]:
    rng = random.Random(seed)
    counts = {k: 0 for k in OUTCOMES}
    by_mutation: Dict[str, Dict[str, int]] = {}
    examples: Dict[str, List[Dict[str, Any]]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="osteonet_fuzz_") as folder:
        original = _seed_checkpoint(folder)
        data = open(original, "rb").read()
        regions = _regions(original)
        seeds = _seed_files(folder) if kind == "garbage" else {}
        worker = Worker(kind, original)
        for i in range(n):
            if kind == "checkpoints":
                mutant, how = _mutate(data, rng, regions)
                if mutant == data:
                    mutant, how = mutant + b"\0", "append"
                path = os.path.join(folder, f"m{i % 4}.pt")
            else:
                ext = rng.choice([".png", ".nii.gz", ".dcm", ".csv", ".pt", ".nii", ".jpg", ".series"])
                base = data if ext == ".pt" else seeds[ext]
                choice = rng.random()
                if choice < 0.3 or not base:
                    mutant, how = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 64, 1000, 5000]))), "random"
                else:
                    mutant, how = _mutate(base, rng, {})
                how = f"{ext}:{how}"
                sub = os.path.join(folder, f"g{i % 4}")
                os.makedirs(sub, exist_ok=True)
                if ext == ".series":  # a folder of one garbage ".dcm"
                    path = os.path.join(sub, "series.series")
                    os.makedirs(path, exist_ok=True)
                    target = os.path.join(path, "1.dcm")
                else:
                    path = target = os.path.join(sub, "manifest.csv" if ext == ".csv" else "f" + ext)
                with open(target, "wb") as f:
                    f.write(mutant)
            if kind == "checkpoints":
                with open(path, "wb") as f:
                    f.write(mutant)
            r = worker.run(path, timeout)
            counts[r["outcome"]] += 1
            mk = how.split(":")[0] if kind == "garbage" else how
            by_mutation.setdefault(mk, {k: 0 for k in OUTCOMES})[r["outcome"]] += 1
            if r["outcome"] not in ("clean_error", "accepted_same", "accepted") and len(examples.setdefault(r["outcome"], [])) < 5:
                examples[r["outcome"]].append({"case": i, "mutation": how, **{k: v for k, v in r.items() if k != "outcome"}})
            if log and (i + 1) % max(1, n // 10) == 0:
                log(f"{kind}: {i + 1}/{n} {json.dumps({k: v for k, v in counts.items() if v})}")
        worker.close()
    return {"campaign": kind, "tried": n, "seed": seed, "timeout_s": timeout, **counts,
            "by_mutation": {k: {o: c for o, c in v.items() if c} for k, v in sorted(by_mutation.items())},
            "examples": examples, "seconds": round(time.time() - t0, 1),
            "machine": f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}"}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_worker":
        _worker(sys.argv[2], sys.argv[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["checkpoints", "garbage"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    p.add_argument("--out", default=None, help="JSON of the figures (e.g. tests/fuzz/results/checkpoints.json)")
    p.add_argument("--fail-on", default="silent_accept,crash,hang,long_message,unclean_error",
                   help="outcomes that make the exit status 1")
    a = p.parse_args(argv)
    result = run_campaign(a.kind, a.n, a.seed, a.timeout)
    text = json.dumps(result, indent=1)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps({k: result[k] for k in ("campaign", "tried", *OUTCOMES, "seconds")}))
    bad = [o for o in a.fail_on.split(",") if o and result.get(o, 0)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
