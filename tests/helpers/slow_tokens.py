"""A stand-in for an LLM CLI (llama-cli, ollama run): prints tokens slowly; with
--ignore-term it ignores SIGTERM as some real ones do while generating."""

import signal
import sys
import time

if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
delay = float(sys.argv[sys.argv.index("--delay") + 1]) if "--delay" in sys.argv else 0.02
count = int(sys.argv[sys.argv.index("--tokens") + 1]) if "--tokens" in sys.argv else 1000000
for i in range(count):
    sys.stdout.write(f"tok{i} ")
    sys.stdout.flush()
    time.sleep(delay)
print()
