"""A delaying TCP relay for a host of the network lab (tooling/netlab.py): the host's own
outgoing connections to the other hosts are redirected to it by an iptables rule, and it
forwards each one to where it was going, every chunk held `delay_ms` first, each way.

What it models: a one-way propagation delay on the payload of every connection between two
hosts (so a round trip costs twice the delay, as on a LAN or between racks), in order and
without loss. What it does not: loss, jitter, reordering or a bandwidth limit; the TCP
handshake itself is not delayed (the host's connect is answered by the relay at once, and a
host that cannot be reached makes the connection hang until the relay gives up, as a
dropped SYN does, rather than refuse it). Run inside the host's namespace:

    python -m tooling.delay --port 7999 --delay-ms 5 --mark 119
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
from collections import deque

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
_CHUNK_BYTES = 65536
# How long a connect to an unreachable host is tried: Linux gives up on a SYN after ~2 min.
_CONNECT_TIMEOUT_S = 120.0


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy one direction, each chunk released `delay_s` after it arrived."""
    loop = asyncio.get_running_loop()
    held: deque[tuple[float, bytes]] = deque()
    arrived = asyncio.Event()
    done = False

    async def release() -> None:
        while True:
            while not held:
                if done:
                    return
                arrived.clear()
                await arrived.wait()
            due, data = held.popleft()
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(release())
    try:
        while data := await reader.read(_CHUNK_BYTES):
            held.append((loop.time() + delay_s, data))
            arrived.set()
        done = True
        arrived.set()
        await sender
        if writer.can_write_eof():
            writer.write_eof()
    finally:
        sender.cancel()


class DelayRelay:
    def __init__(self, delay_ms: float, mark: int) -> None:
        self.delay_s = delay_ms / 1000
        self.mark = mark

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = original_destination(client_w.get_extra_info("socket"))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Marked, so that the redirect rule lets the relay's own connection through.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), _CONNECT_TIMEOUT_S)
            up_r, up_w = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError):
            sock.close()
            client_w.close()
            return
        pumps = [asyncio.create_task(_pump(client_r, up_w, self.delay_s)),
                 asyncio.create_task(_pump(up_r, client_w, self.delay_s))]
        try:
            await asyncio.gather(*pumps)
        except (OSError, ConnectionError):
            pass
        finally:
            for task in pumps:
                task.cancel()
            for w in (up_w, client_w):
                with contextlib.suppress(Exception):
                    w.close()


async def serve(port: int, delay_ms: float, mark: int) -> None:
    relay = DelayRelay(delay_ms, mark)
    server = await asyncio.start_server(relay.handle, "0.0.0.0", port, backlog=1024)
    print(f"delay relay on {port}: {delay_ms} ms each way", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tooling.delay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--mark", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.delay_ms, args.mark))


if __name__ == "__main__":
    main()
