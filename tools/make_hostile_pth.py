#!/usr/bin/env python3
"""Writes tests/fixtures/evil_touch.pth: a zip-format "checkpoint" whose data.pkl, if
unpickled by Python (torch.load without weights_only=True), creates two files:

    /tmp/cace-net-evil-system   through posix.system("touch ...")
    /tmp/cace-net-evil-open     through io.open(..., "w")

Python standard library only. The test in src/checkpoint/pth.rs checks that the reader refuses
it, naming both globals, and that neither file exists afterwards.

With --verify the script also proves the payload is live: it unpickles data.pkl with Python's
own pickle (which executes it), checks that both files appeared, and removes them.
"""
import io
import os
import pickle
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "evil_touch.pth")
TARGETS = ["/tmp/cace-net-evil-system", "/tmp/cace-net-evil-open"]


class Touch:
    def __reduce__(self):
        return os.system, (f"touch {TARGETS[0]}",)


class OpenForWriting:
    def __reduce__(self):
        return open, (TARGETS[1], "w")


def payload():
    return pickle.dumps({"layer.weight": Touch(), "layer.bias": OpenForWriting()}, protocol=2)


def main():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("data.pkl", payload()), ("byteorder", b"little"), ("version", b"3\n")]:
            z.writestr(zipfile.ZipInfo("archive/" + name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    with open(OUT, "wb") as f:
        f.write(buf.getvalue())
    print(f"{len(buf.getvalue())} bytes -> {os.path.normpath(OUT)}")
    if "--verify" in sys.argv:
        for t in TARGETS:
            if os.path.exists(t):
                os.remove(t)
        with zipfile.ZipFile(OUT) as z:
            pickle.loads(z.read("archive/data.pkl"))  # runs the payload
        assert all(os.path.exists(t) for t in TARGETS), "payload did not run"
        for t in TARGETS:
            os.remove(t)
        print("verified: unpickling creates", ", ".join(TARGETS))


if __name__ == "__main__":
    main()
