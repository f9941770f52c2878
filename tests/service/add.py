"""The documented sw_example: print the sum of the numeric arguments, or of stdin."""

import sys

words = sys.argv[1:] or sys.stdin.read().split()
print(sum(float(word) for word in words))
