"""``python -m bench.affinity_schemes``: shared affinity table vs rendezvous hashing, on how they spread
conversations over backends (both are consistent across replicas; this is what else separates them).

A shared table (what the gateway does with GATEWAY_STATE_URL) pins a new conversation to the least busy
eligible backend and remembers it in Redis; rendezvous hashing needs no memory: every replica sends a
conversation to the backend with the highest hash of (conversation, backend), so the spread is a coin toss
per conversation. With 1-slot llama.cpp backends an uneven spread is queueing, or turns moved off their cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics

from gateway.affinity import conversation_key


def rendezvous(key: bytes, backends: list[str]) -> str:
    return max(backends, key=lambda name: hashlib.blake2b(key + name.encode(), digest_size=8).digest())


def busiest_share(conversations: int, backends: list[str]) -> float:
    """Rendezvous: the share of conversations the busiest backend gets, for random conversation openings."""
    counts = dict.fromkeys(backends, 0)
    for _ in range(conversations):
        key = conversation_key("m", [{"role": "user", "content": os.urandom(12).hex()}])
        assert key is not None
        counts[rendezvous(key, backends)] += 1
    return max(counts.values()) / conversations


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.affinity_schemes", description=__doc__)
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    print("| backends | conversations | busiest backend's share, rendezvous: median / p90 / worst | shared table |")
    print("|---:|---:|---|---|")
    for backends, conversations in ((2, 10), (2, 100), (3, 30), (6, 60)):
        names = [f"llama-{i}" for i in range(1, backends + 1)]
        shares = sorted(busiest_share(conversations, names) for _ in range(args.trials))
        even = -(-conversations // backends) / conversations
        print(f"| {backends} | {conversations} | {statistics.median(shares):.0%} / "
              f"{shares[int(0.9 * len(shares))]:.0%} / {shares[-1]:.0%} | {even:.0%} (least busy first) |")


if __name__ == "__main__":
    main()
