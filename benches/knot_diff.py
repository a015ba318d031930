#!/usr/bin/env python3
"""The DNS edge-case differential: the same raw packets to meshdns and to
Knot DNS serving the same names, and where their replies differ.

    benches/knot_diff.py MESHDNS_PORT KNOT_PORT

Both must serve `global.` with web.shop (A 10.1.0.11-13, AAAA fd00:3::11)
and db.data (A 10.1.2.10), NSID `replica-1` (see benches/README.md).
Compares rcode (with the extended bits), the AA/TC/RD/CD flags, the section
counts, the OPT's presence, the ECS scope and the NSID.
"""
import socket
import struct
import sys


def name(text):
    out = b""
    for label in text.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(ident, flags, qd, an, ns, ar):
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, ar)


def question(qname, qtype=1, qclass=1):
    return name(qname) + struct.pack(">HH", qtype, qclass)


def opt(options=(), owner=b"\0", payload=1232, version=0, do=False):
    data = b"".join(struct.pack(">HH", c, len(d)) + d for c, d in options)
    return owner + struct.pack(">HHBBHH", 41, payload, 0, version, 0x8000 if do else 0, len(data)) + data


def ecs(family, source, address):
    return (8, struct.pack(">HBB", family, source, 0) + bytes(address))


def query(qname, qtype=1, options=None, qclass=1, flags=0x0100):
    if options is None:
        return header(1, flags, 1, 0, 0, 0) + question(qname, qtype, qclass)
    return header(1, flags, 1, 0, 0, 1) + question(qname, qtype, qclass) + opt(options)


Q = question("web.shop.global")
CASES = [
    ("A", query("web.shop.global", 1, [])),
    ("A, no EDNS", query("web.shop.global")),
    ("AAAA db.data (NODATA)", query("db.data.global", 28, [])),
    ("NXDOMAIN", query("nope.shop.global", 1, [])),
    ("apex SOA", query("global", 6, [])),
    ("ANY web.shop", query("web.shop.global", 255, [])),
    ("ANY apex", query("global", 255, [])),
    ("QCLASS ANY", query("web.shop.global", 1, None, 255)),
    ("QCLASS CH", query("web.shop.global", 1, None, 3)),
    ("unknown qtype 65000", query("web.shop.global", 65000, [])),
    ("out of zone", query("example.com", 1, [])),
    ("EDNS version 1", header(1, 0x0100, 1, 0, 0, 1) + Q + opt(version=1)),
    ("DO bit", header(1, 0x0100, 1, 0, 0, 1) + Q + opt(do=True)),
    ("CD bit", query("web.shop.global", 1, [], flags=0x0110)),
    ("opcode STATUS", query("web.shop.global", 1, [], flags=0x1100)),
    ("no question", header(1, 0x0100, 0, 0, 0, 1) + opt()),
    ("two questions", header(1, 0x0100, 2, 0, 0, 0) + Q + Q),
    ("NSID asked", query("web.shop.global", 1, [(3, b"")])),
    ("ECS /32 (A)", query("web.shop.global", 1, [ecs(1, 32, [127, 0, 0, 2])])),
    ("ECS /32 NXDOMAIN", query("nope.shop.global", 1, [ecs(1, 32, [127, 0, 0, 2])])),
    ("ECS /32 NODATA", query("db.data.global", 28, [ecs(1, 32, [127, 0, 0, 2])])),
    ("ECS /0", query("web.shop.global", 1, [ecs(1, 0, [])])),
    ("ECS family 3", query("web.shop.global", 1, [ecs(3, 0, [])])),
    ("ECS /33 ipv4", query("web.shop.global", 1, [ecs(1, 33, [10, 0, 0, 1, 0])])),
    ("ECS /24 with 4 bytes", query("web.shop.global", 1, [ecs(1, 24, [10, 0, 0, 1])])),
    ("ECS /24 with 2 bytes", query("web.shop.global", 1, [ecs(1, 24, [10, 0])])),
    ("ECS unmasked /23", query("web.shop.global", 1, [ecs(1, 23, [10, 1, 3])])),
    ("OPT owner x.", header(1, 0x0100, 1, 0, 0, 1) + Q + opt(owner=name("x"))),
    ("OPT in answer", header(1, 0x0100, 1, 1, 0, 0) + Q + opt()),
    ("OPT in authority", header(1, 0x0100, 1, 0, 1, 0) + Q + opt()),
    ("two OPTs", header(1, 0x0100, 1, 0, 0, 2) + Q + opt() + opt()),
    ("ar 2, one record", header(1, 0x0100, 1, 0, 0, 2) + Q + opt()),
    ("ar 0, OPT after", header(1, 0x0100, 1, 0, 0, 0) + Q + opt()),
    ("5000-byte padded query", query("web.shop.global", 1, [(12, bytes(5000))])),
]


def skip_name(p, at):
    while True:
        n = p[at]
        if n == 0:
            return at + 1
        if n & 0xC0 == 0xC0:
            return at + 2
        at += 1 + n


def summary(p):
    if p is None:
        return "no reply"
    if len(p) < 12:
        return "runt"
    _, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", p[:12])
    rcode = flags & 0xF
    bits = [b for b, m in (("aa", 0x400), ("tc", 0x200), ("rd", 0x100), ("cd", 0x10)) if flags & m]
    at = 12
    try:
        for _ in range(qd):
            at = skip_name(p, at) + 4
        opt_seen, scope, nsid = False, None, None
        for i in range(an + ns + ar):
            at = skip_name(p, at)
            rtype, _, ttl, rdlen = struct.unpack(">HHIH", p[at:at + 10])
            data = p[at + 10:at + 10 + rdlen]
            at += 10 + rdlen
            if rtype == 41:
                opt_seen = True
                rcode |= (ttl >> 24) << 4
                o = 0
                while o < len(data):
                    code, length = struct.unpack(">HH", data[o:o + 4])
                    body = data[o + 4:o + 4 + length]
                    if code == 8:
                        scope = body[3]
                    if code == 3:
                        nsid = body.decode(errors="replace")
                    o += 4 + length
    except (IndexError, struct.error):
        return "unparsable reply"
    out = f"rc={rcode} {','.join(bits)} qd={qd} an={an} ns={ns} ar={ar}"
    if opt_seen:
        out += " opt"
    if scope is not None:
        out += f" scope={scope}"
    if nsid is not None:
        out += f" nsid={nsid}"
    return out


def ask(port, packet):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def main():
    meshdns, knot = int(sys.argv[1]), int(sys.argv[2])
    differ = 0
    for label, packet in CASES:
        a, b = summary(ask(meshdns, packet)), summary(ask(knot, packet))
        mark = "  " if a == b else "≠ "
        differ += a != b
        print(f"{mark}{label:28} meshdns: {a:48} knot: {b}")
    print(f"{differ} of {len(CASES)} cases differ")


if __name__ == "__main__":
    main()
