"""Sans-I/O Gearman protocol: packet layouts, codec and admin text formats."""

from .codec import AdminLine, BadPacket, Data, Decoder, Event, Packet, encode, encode_request
from .constants import DEFAULT_PORT, REQ, RES, ErrorCode, PacketType, Priority

__all__ = [
    "DEFAULT_PORT",
    "REQ",
    "RES",
    "AdminLine",
    "BadPacket",
    "Data",
    "Decoder",
    "ErrorCode",
    "Event",
    "Packet",
    "PacketType",
    "Priority",
    "encode",
    "encode_request",
]
