"""WebSocket echo, server or client, for jitsu-http's tests (python3-websockets).

    ws_echo.py serve PORT           echo every message back (a guest)
    ws_echo.py ask HOST PORT VHOST  send three messages through a proxy
                                    that routes by Host VHOST; exit 0 if
                                    all three came back
"""
import asyncio
import sys

import websockets


async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)


async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port):
        print("ready", flush=True)
        await asyncio.Future()


async def ask(host, port, vhost):
    async with websockets.connect(
        f"ws://{vhost}/echo", host=host, port=port, open_timeout=10
    ) as ws:
        for text in ("ping", "x" * 70000, "pong"):
            await ws.send(text)
            back = await asyncio.wait_for(ws.recv(), 10)
            if back != text:
                print(f"sent {len(text)} bytes, got {len(back)} back")
                return 1
    print("3 messages echoed")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        sys.exit(asyncio.run(ask(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
