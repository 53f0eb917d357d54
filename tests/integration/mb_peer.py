#!/usr/bin/python3
"""A real Modbus peer for doppel's integration tests, built on pymodbus.

    mb_peer.py tcp PORT [--delay SECONDS]   pymodbus TCP server on 127.0.0.1:PORT
    mb_peer.py rtu DEVICE                   pymodbus RTU server (units 1 and 2) on a serial port
    mb_peer.py garbage PORT                 answers every request with random bytes
    mb_peer.py close PORT                   closes every connection as soon as it is made

The TCP and RTU servers hold every data type in every word order, laid out
as described in LAYOUT below (test_modbus_peer.c mirrors it), written with
pymodbus's own BinaryPayloadBuilder so the register images are the peer's
and not doppel's. Addresses beyond the blocks answer exception 2.
--delay makes every read answer late (slower than doppel's timeout).
"""
import os
import random
import socket
import sys
import time

from pymodbus.constants import Endian
from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.payload import BinaryPayloadBuilder

ORDERS = {
    "ABCD": (Endian.Big, Endian.Big),
    "CDAB": (Endian.Big, Endian.Little),
    "BADC": (Endian.Little, Endian.Big),
    "DCBA": (Endian.Little, Endian.Little),
}
ORDER_NAMES = ["ABCD", "CDAB", "BADC", "DCBA"]
TYPES = ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"]


def value(typ, j):
    """The value of type `typ` in order number `j` (exactly representable as a double)."""
    return {
        "u16": 0xA1B2 + j,
        "i16": -12345 - j,
        "u32": 0xA1B2C3D4 + j,
        "i32": -123456789 - j,
        "u64": 0x0123456789ABCD00 + j * 256,
        "i64": -0x0123456789ABCD00 - j * 256,
        "f32": 3.25 * (j + 1),
        "f64": 3.141592653589793 * (j + 1),
    }[typ]


def add(builder, typ, v):
    {
        "u16": builder.add_16bit_uint,
        "i16": builder.add_16bit_int,
        "u32": builder.add_32bit_uint,
        "i32": builder.add_32bit_int,
        "u64": builder.add_64bit_uint,
        "i64": builder.add_64bit_int,
        "f32": builder.add_32bit_float,
        "f64": builder.add_64bit_float,
    }[typ](v)


def holding_registers(unit):
    """LAYOUT: holding register (i * 4 + j) * 4 holds TYPES[i] in ORDER_NAMES[j];
    140.. holds "doppel-modbus" in 7 registers ABCD, 150.. the same BADC;
    160 holds 0xA005 (bits 0, 2, 13 and 15 set); 170 holds 1000 * unit.
    The block is 200 registers long."""
    regs = [0] * 200
    for i, typ in enumerate(TYPES):
        for j, order in enumerate(ORDER_NAMES):
            byteorder, wordorder = ORDERS[order]
            b = BinaryPayloadBuilder(byteorder=byteorder, wordorder=wordorder)
            add(b, typ, value(typ, j))
            words = b.to_registers()
            at = (i * 4 + j) * 4
            regs[at:at + len(words)] = words
    # pymodbus packs strings high byte first whatever the byte order, so
    # the low-byte-first (BADC) image is made by swapping each word.
    b = BinaryPayloadBuilder(byteorder=Endian.Big)
    b.add_string(b"doppel-modbus\0")
    words = b.to_registers()
    regs[140:140 + len(words)] = words
    regs[150:150 + len(words)] = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    regs[160] = 0xA005
    regs[170] = 1000 * unit
    return regs


class SlowBlock(ModbusSequentialDataBlock):
    """A block whose reads answer late."""

    delay = 0.0

    def getValues(self, address, count=1):
        time.sleep(self.delay)
        return super().getValues(address, count)


def context(units, delay=0.0):
    block = SlowBlock if delay > 0 else ModbusSequentialDataBlock
    SlowBlock.delay = delay
    slaves = {}
    for unit in units:
        slaves[unit] = ModbusSlaveContext(
            co=block(0, [1, 0, 1, 1, 0, 0, 0, 1] + [0] * 92),
            di=block(0, [0, 1, 1, 0] + [0] * 96),
            hr=block(0, holding_registers(unit)),
            ir=block(0, [1234, 65535 - 99] + [0] * 98),
            zero_mode=True,
        )
    if len(units) == 1:
        return ModbusServerContext(slaves=slaves[units[0]], single=True)
    return ModbusServerContext(slaves=slaves, single=False)


def garbage(port):
    """Accepts connections and answers every request with random bytes."""
    rnd = random.Random(1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            while conn.recv(260):
                conn.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40))))
        except OSError:
            pass
        conn.close()


def close(port):
    """Accepts connections and closes each at once, as a device whose
    connection slots are all taken does. Stops by itself after 60 s."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    srv.settimeout(1)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        conn.close()


def main():
    mode, where = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--delay" else 0.0
    if mode == "garbage":
        garbage(int(where))
    elif mode == "close":
        close(int(where))
    elif mode == "tcp":
        from pymodbus.server import StartTcpServer

        StartTcpServer(context=context([1], delay), address=("127.0.0.1", int(where)),
                       allow_reuse_address=True)
    elif mode == "rtu":
        from pymodbus.server import StartSerialServer
        from pymodbus.transaction import ModbusRtuFramer

        StartSerialServer(context=context([1, 2]), framer=ModbusRtuFramer, port=where,
                          baudrate=38400, timeout=0.05)
    else:
        sys.exit(f"mb_peer.py: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
