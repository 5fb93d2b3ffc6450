"""ICC colour profiles made by hand, so no binary profile is checked in.

The demo's phone photo carries Display P3, as an iPhone's do; the tests' pictures carry profiles
chosen to make a missed conversion obvious. Every profile here is ICC v2.1 (ICC.1:2001-04): a
128-byte header, a tag table, then the tags; an RGB one is a matrix/TRC display profile.
"""

from __future__ import annotations

import struct

XYZ = tuple[float, float, float]
D50: XYZ = (0.9642, 1.0, 0.8249)  # the ICC profile connection space's white
# sRGB's primaries, adapted to D50, as an ICC matrix profile states them
SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def xyz(values: XYZ) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(s15fixed16(value) for value in values)


def description(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return (
        b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + struct.pack(">IIHB", 0, 0, 0, 0) + bytes(67)
    )


def icc_profile(device_class: bytes, colour_space: bytes, connection_space: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2.1 profile: 128-byte header, tag table, tags (ICC.1:2001-04)."""
    table_size = 4 + 12 * len(tags)
    entries, body = b"", b""
    for signature, data in tags.items():
        padded = data + bytes(-len(data) % 4)
        entries += struct.pack(">4sII", signature, 128 + table_size + len(body), len(padded))
        body += padded
    header = struct.pack(
        ">I4sI4s4s4s6H4s4sI4s4sQI",
        128 + table_size + len(body),
        bytes(4),
        0x02100000,
        device_class,
        colour_space,
        connection_space,
        *(2026, 1, 1, 0, 0, 0),
        b"acsp",
        bytes(4),
        0,
        bytes(4),
        bytes(4),
        0,
        0,
    )
    header += xyz(D50)[8:] + bytes(4 + 16 + 28)
    return header + struct.pack(">I", len(tags)) + entries + body


def rgb_profile(red: XYZ, green: XYZ, blue: XYZ, gamma: float) -> bytes:
    """A matrix/TRC RGB display profile, like Adobe RGB's, with the primaries and gamma given."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    tags = {b"desc": description("opsbots RGB"), b"wtpt": xyz(D50), b"rXYZ": xyz(red), b"gXYZ": xyz(green)}
    tags |= {b"bXYZ": xyz(blue), b"rTRC": curve, b"gTRC": curve, b"bTRC": curve}
    return icc_profile(b"mntr", b"RGB ", b"XYZ ", tags)


# Display P3's primaries (DCI-P3's red, green and blue under a D65 white), adapted to D50 as Apple's
# own Display P3 profile states them; its tone curve is sRGB's, here the 2.2 gamma that approximates it.
DISPLAY_P3 = rgb_profile((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841), 2.2)
