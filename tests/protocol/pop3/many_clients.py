"""Many POP3 clients at once, in a process of their own: ``python -m tests.protocol.pop3.many_clients SPEC``.

``SPEC`` is a JSON file: the port, one key per user (``u{n}@many.example``)
and the message each maildrop holds. Every client logs in, waits until all
have, then sends STAT, RETR 1 and QUIT; the outcome of each ("ok", or what
went wrong) is printed as one JSON list. :func:`run` starts it from a test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


async def run(port: int, keys: list[str], raw: bytes, tmp: Path) -> list[str]:
    """Run the clients in a subprocess (without blocking the caller's loop); their outcomes."""
    spec = tmp / "many-clients.json"
    spec.write_text(json.dumps({"port": port, "keys": keys, "raw": raw.decode("latin-1")}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.protocol.pop3.many_clients", str(spec), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"the clients' process failed ({proc.returncode})"
    results: list[str] = json.loads(out)
    return results


async def _clients(port: int, keys: list[str], raw: bytes) -> list[str]:
    """A client per key. Generous waits: on a loaded machine the point is that every session is served."""
    users = len(keys)
    connecting = asyncio.Semaphore(100)  # the listen backlog (100) would otherwise drop SYNs for seconds
    all_in = asyncio.Event()
    arrived = 0

    async def status(reader: asyncio.StreamReader) -> str:
        line = await asyncio.wait_for(reader.readline(), 60)
        if not line:
            raise ConnectionError("connection closed")
        return line.decode().rstrip("\r\n")

    async def session(n: int) -> str:
        nonlocal arrived
        writer = None
        try:
            try:
                async with connecting:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
                    greeting = await status(reader)
                writer.write(f"USER u{n}@many.example\r\nPASS {keys[n]}\r\n".encode())
                replies = [await status(reader), await status(reader)]
            finally:
                arrived += 1
                if arrived == users:
                    all_in.set()
            if not replies[1].startswith("+OK"):
                return f"{n}: {greeting} / {replies}"
            await asyncio.wait_for(all_in.wait(), 120)  # every maildrop held at once
            await asyncio.sleep(n % 100 / 100)  # then the downloads, spread over a second as real clients' are
            writer.write(b"STAT\r\nRETR 1\r\n")
            stat, retr = await status(reader), await status(reader)
            body = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 60)
            writer.write(b"QUIT\r\n")
            quit_reply = await status(reader)
            if stat != f"+OK 1 {len(raw)}" or retr != f"+OK {len(raw)} octets" or not quit_reply.startswith("+OK"):
                return f"{n}: {stat} / {retr} / {quit_reply}"
            return "ok" if body[:-3].replace(b"\r\n..", b"\r\n.") == raw else f"{n}: wrong bytes"
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return f"{n}: {exc!r}"
        finally:
            if writer is not None:
                writer.close()

    return list(await asyncio.gather(*(session(n) for n in range(users))))


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    results = asyncio.run(_clients(spec["port"], spec["keys"], spec["raw"].encode("latin-1")))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
