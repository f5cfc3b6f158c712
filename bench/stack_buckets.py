#!/usr/bin/env python3
"""Share of a ferrokv node's CPU samples by component, from folded stacks.

Input: the output of `inferno-collapse-perf` (one `frame;frame;... count` per
line). Each stack is put in the first bucket whose pattern occurs in it, in
the order below, so a handler's own work counts under HTTP and a task's
socket I/O under the task that did it. A stack's first frame is the name of
its thread: the WAL writer's thread counts as the WAL writer whatever was
inlined into it (with link-time optimisation, `Writer::run` disappears into
the thread's entry point). Prints a markdown table.
"""

import sys
from collections import Counter

# (bucket, thread names, patterns): a stack whose thread is one of the names,
# or that contains one of the patterns, belongs to the bucket.
BUCKETS = [
    ("WAL writer thread (encode, write, fdatasync)", ["raft-wal", "raft-wal-close"], ["log_store::Writer::run"]),
    ("HTTP connections (hyper, axum, handlers, socket I/O to clients)",
     [], ["handle_connection", "ferrokv::http::connection"]),
    ("Raft core (openraft RaftCore loop)", [], ["RaftCore"]),
    ("Replication (openraft ReplicationCore, tonic/h2 client, socket I/O to peers)",
     [], ["ReplicationCore", "h2::client", "H2ClientFuture", "tonic::"]),
    ("State machine apply (openraft SM worker, KvState)", [], ["sm::worker"]),
    ("gRPC server (h2 server: peers' requests)", [], ["h2::server"]),
]
OTHER = "other (tokio scheduler, wake-ups, timers, kernel scheduling)"


def main(path: str) -> int:
    counts: Counter = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            samples = int(n)
            total += samples
            thread = stack.split(";", 1)[0]
            for name, threads, patterns in BUCKETS:
                if thread in threads or any(p in stack for p in patterns):
                    counts[name] += samples
                    break
            else:
                counts[OTHER] += samples
    if total == 0:
        print("no samples", file=sys.stderr)
        return 1
    print("| component | share of the leader's CPU samples |")
    print("|---|---:|")
    for name, samples in counts.most_common():
        print(f"| {name} | {100 * samples / total:.1f} % |")
    print(f"\n(total sampled CPU time: {total / 1e9:.2f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: stack_buckets.py STACKS.folded", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
