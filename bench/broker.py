"""``python -m bench.broker --port P``: the Tansu broker (in-memory storage) in place of this
interpreter, so that the bench's ``Supervisor`` starts, meters and stops it like any server."""

from __future__ import annotations

import argparse
import os

from gateway.devkafka import tansu_binary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker")
    parser.add_argument("--port", type=int, required=True)
    url = f"tcp://127.0.0.1:{parser.parse_args().port}"
    binary = str(tansu_binary())
    args = ["broker", "--listener-url", url, "--advertised-listener-url", url]
    os.execv(binary, [binary, *args, "--storage-engine", "memory://tansu/"])


if __name__ == "__main__":
    main()
