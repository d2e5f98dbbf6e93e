#!/usr/bin/env python3
"""The virtual cluster's Ethernet hub for more than two nodes.

Usage: hub.py DIR N.  Binds the unix datagram sockets DIR/hub1..hubN; node
I's QEMU sends its frames from DIR/nodeI to DIR/hubI, and every frame is
repeated to all the other nodes' sockets.  Nothing here touches an IP
network: the sockets are files in DIR.  Ends when killed or when DIR goes.
"""
import os
import select
import socket
import sys


def main():
    directory, count = sys.argv[1], int(sys.argv[2])
    ports = {}
    for i in range(1, count + 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(directory, f"hub{i}"))
        ports[sock] = i
    while os.path.isdir(directory):
        ready, _, _ = select.select(list(ports), [], [], 5)
        for sock in ready:
            frame = sock.recv(65536)
            for other, j in ports.items():
                if other is sock:
                    continue
                try:
                    other.sendto(frame, os.path.join(directory, f"node{j}"))
                except OSError:
                    pass  # that node's QEMU is not up (yet): the frame is lost, as on a wire


if __name__ == "__main__":
    main()
