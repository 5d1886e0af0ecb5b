#!/usr/bin/env python3
"""One guest connection of QEMU's `guestfwd=tcp:IP:PORT-cmd:guestfwd-relay.py HOST_PORT`.

QEMU user networking (slirp) starts this program for each connection the guest opens to
IP:PORT, with that connection on stdin and stdout. It relays the bytes to 127.0.0.1:HOST_PORT
on the build machine and back, passes each side's end of stream on as a half-close, and exits
when both directions are done. Nothing but the loopback address is ever dialled, so with
`restrict=on` no packet of the guest leaves the machine.
"""
import os
import selectors
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as error:
        print(f"guestfwd-relay: 127.0.0.1:{port}: {error}", file=sys.stderr)
        return 1
    upstream.settimeout(None)
    guest_in, guest_out = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(guest_in, selectors.EVENT_READ, "guest")
    selector.register(upstream, selectors.EVENT_READ, "upstream")
    open_directions = 2
    while open_directions > 0:
        for key, _ in selector.select():
            try:
                if key.data == "guest":
                    data = os.read(guest_in, 65536)
                    if data:
                        upstream.sendall(data)
                        continue
                    upstream.shutdown(socket.SHUT_WR)
                else:
                    data = upstream.recv(65536)
                    if data:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(guest_out, view):]
                        continue
                    try:
                        socket.socket(fileno=os.dup(guest_out)).shutdown(socket.SHUT_WR)
                    except OSError:
                        os.close(guest_out)
            except OSError:
                return 0  # either side vanished (e.g. QEMU exited): nothing left to relay
            selector.unregister(key.fileobj)
            open_directions -= 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
