"""peer.py: the PyTorch side of `make bench` (driven by tests/bench/peer.lua).

Started as `/usr/bin/python3 peer.py RESULT_FIFO`; reads commands on stdin, one per line, and
answers each with one line on RESULT_FIFO, which it opens before anything else so the Lua side
never waits on a process that died early:
  load MODULE THREADS key=value ...  -> "loaded ID" | "error MSG"   (MODULE: a file next to this
                                        one defining setup(case, threads) -> a zero-argument step)
  run ID N                           -> "times t1 ... tN" (seconds per call, perf_counter)
  quit
The first line is "ready VERSION" or "absent REASON" (PyTorch missing: the benchmark prints
its gmoe times and says the peer is absent).
"""
import importlib.util
import os
import sys
import time


def parse_value(s):
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(s, s)


def main():
    out = open(sys.argv[1], "w", buffering=1)
    try:
        import torch
    except Exception as e:  # no PyTorch: the benchmark says the peer is absent
        out.write("absent %s\n" % str(e).replace("\n", " "))
        return
    out.write("ready %s\n" % torch.__version__)
    here = os.path.dirname(os.path.abspath(__file__))
    steps = []
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "quit":
                break
            if words[0] == "load":
                path, threads = os.path.join(here, words[1]), int(words[2])
                case = dict(w.split("=", 1) for w in words[3:])
                case = {k: parse_value(v) for k, v in case.items()}
                torch.set_num_threads(threads)
                torch.manual_seed(0)
                spec = importlib.util.spec_from_file_location(words[1].replace(".py", ""), path)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
                steps.append(mod.setup(case, threads))
                out.write("loaded %d\n" % (len(steps) - 1))
            elif words[0] == "run":
                step, n = steps[int(words[1])], int(words[2])
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                out.write("times %s\n" % " ".join("%.9g" % t for t in times))
            else:
                out.write("error unknown command %s\n" % words[0])
        except Exception as e:
            out.write("error %s: %s\n" % (type(e).__name__, str(e).replace("\n", " ")))


if __name__ == "__main__":
    main()
