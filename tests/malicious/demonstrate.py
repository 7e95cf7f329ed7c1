"""Shows that the hostile corpus is real: under Python's pickle the same bytes run their
payloads and create the canary file that `deva`'s reader never lets appear.

Run by hand only (it executes the payloads: shell `touch`, `exec`, `eval`, `subprocess`):

    DEVA_CORPUS_OUT=/tmp/deva-corpus cargo test --test checkpoint_safety hostile
    python3 tests/malicious/demonstrate.py /tmp/deva-corpus

Each file is unpickled in a child process. Torch names are stubbed (so no torch is needed and
the state-dict parts do nothing); every other global is imported as pickle normally does.
Exit status 1 if a case that should run its payload did not, or one that should not did.
"""

import json
import os
import subprocess
import sys
import time
import zipfile

CHILD = r"""
import pickle, sys
class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split('.')[0] == 'torch':
            return lambda *args, **kwargs: None
        return super().find_class(module, name)
    def persistent_load(self, pid):
        return None
Unpickler(open(sys.argv[1], 'rb')).load()
"""


def main(corpus):
    with open(os.path.join(corpus, "manifest.json")) as f:
        manifest = json.load(f)
    canary = manifest["canary"]
    wrong = 0
    for case in manifest["cases"]:
        if os.path.exists(canary):
            os.remove(canary)
        path = os.path.join(corpus, case["file"])
        if case["zip"]:
            with zipfile.ZipFile(path) as z:
                data = z.read("archive/data.pkl")
            path = path + ".data.pkl"
            with open(path, "wb") as f:
                f.write(data)
        child = subprocess.run(
            [sys.executable, "-c", CHILD, path], capture_output=True, text=True, timeout=60
        )
        for _ in range(20):  # subprocess.Popen payloads finish after the child returns
            if os.path.exists(canary):
                break
            time.sleep(0.05)
        ran = os.path.exists(canary)
        ok = ran == case["executes"]
        wrong += not ok
        last = (child.stderr.strip().splitlines() or [""])[-1][:80]
        print(f"{'ok ' if ok else 'BAD'} {case['file']:40} payload ran: {ran!s:5}  {last}")
    if os.path.exists(canary):
        os.remove(canary)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
