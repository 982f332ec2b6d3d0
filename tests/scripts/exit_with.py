import sys

print("about to exit", sys.argv[1], flush=True)
sys.exit(int(sys.argv[1]))
