"""Rendezvous stores hosted by the process that is rank 0 of a group: a TCPStore bound on that process's own node at a
port the OS picks, so the address every member dials is the host's node IP and a port nobody else can take meanwhile."""

from __future__ import annotations

import datetime
import socket

import torch.distributed as dist


def node_ip() -> str:
    """This process's node IP as Ray knows it (inside a Ray actor), else the address its hostname resolves to."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def host_store(world_size: int, timeout_s: float, host: str | None = None) -> tuple[dist.TCPStore, str, int]:
    """Starts a store master in this process; returns it, the host members should dial (this node's IP) and its port.

    The master listens on every interface of this node (torch offers no bind address); the address handed out is the
    node's own IP, which is what multi-node members can reach."""
    host = host or node_ip()
    store = dist.TCPStore(
        host, 0, world_size, is_master=True, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False
    )
    return store, host, store.port


def join_store(host: str, port: int, world_size: int, timeout_s: float) -> dist.TCPStore:
    """A client of the store hosted at host:port."""
    return dist.TCPStore(host, port, world_size, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))
