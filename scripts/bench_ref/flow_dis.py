"""OpenCV DIS optical flow ("medium" preset) between two frames, 2 threads.

    python3 flow_dis.py FRAME0 FRAME1 [REPEATS]

Prints `TIME_MS <median ms per flow>` (grey conversion included, as DIS needs it).
"""

import statistics
import sys
import time

import cv2

cv2.setNumThreads(2)
a, b = (cv2.imread(p) for p in sys.argv[1:3])
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 10
dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
times = []
for i in range(repeats + 1):
    t = time.perf_counter()
    dis.calc(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), None)
    if i:
        times.append(time.perf_counter() - t)
print(f"TIME_MS {statistics.median(times) * 1e3:.1f}")
