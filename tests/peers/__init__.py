"""Loopback protocol peers: real HTTP servers that speak the hosted APIs' wire protocols.

    with OpenAIPeer(Script(Reply("hi"), Fault.rate_limit(2))) as peer:
        backend = load_backend(f"openai:m@{peer.base_url}", timeout=1.0)
        ...
        peer.script.received[-1].body   # what the SDK sent

Used by the backend tests and by the engine benchmark (fixed latency, 64+ concurrent clients).
"""

from .dashscope_server import DashScopePeer
from .openai_server import OpenAIPeer
from .script import Fault, PeerServer, Received, Reply, Script, tiny_jpeg

__all__ = ["DashScopePeer", "Fault", "OpenAIPeer", "PeerServer", "Received", "Reply", "Script", "tiny_jpeg"]
