#!/usr/bin/env python3
"""extract-vmlinux.py VMLINUZ OUT: the uncompressed ELF that QEMU PVH-boots.

Debian's x86 bzImage carries a zstd payload: find a zstd frame magic whose
decompressed data is an ELF, and write that.
"""
import subprocess
import sys

src, dst = sys.argv[1], sys.argv[2]
data = open(src, 'rb').read()
magic = b'\x28\xb5\x2f\xfd'
start = 0
while True:
    pos = data.find(magic, start)
    if pos < 0:
        sys.exit('no zstd payload with an ELF inside found in ' + src)
    res = subprocess.run(['zstd', '-dc', '-q'], input=data[pos:], capture_output=True)
    if res.stdout[:4] == b'\x7fELF':
        open(dst, 'wb').write(res.stdout)
        break
    start = pos + 1
