#!/usr/bin/env python3
"""Helpers for tests/report/check.sh (standard library only). Each prints what is wrong and
exits 1, or exits 0 silently.

    textcheck.py lines FILE TEXT     every non-empty line of FILE occurs in TEXT, modulo whitespace
                                     (the PDF wraps long lines and indents code blocks)
    textcheck.py has STRING TEXT     STRING occurs in TEXT, modulo whitespace
    textcheck.py png-not-blank PNG   the image has several colours and ink on over 0.5% of it
    textcheck.py docx-mono DOCX      the document has code blocks, in a monospace style
"""

import re
import struct
import sys
import zipfile
import zlib

WS = re.compile(r"\s+")


def squash(text):
    return WS.sub("", text)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def lines(path, text_path):
    text = squash(read(text_path))
    missing = [line for line in read(path).splitlines() if line.strip() and squash(line) not in text]
    for line in missing:
        print(f"not found: {line}")
    return not missing


def has(string, text_path):
    if squash(string) in squash(read(text_path)):
        return True
    print(f"not found: {string}")
    return False


def png_pixels(path):
    """(width, height, channels, rows of bytes) of an 8-bit, non-interlaced PNG."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def png_not_blank(path):
    width, height, channels, rows = png_pixels(path)
    colours, ink = set(), 0
    for row in rows:
        for x in range(0, len(row), channels):
            pixel = row[x:x + channels]
            colours.add(pixel)
            if min(pixel[:3] if channels >= 3 else pixel[:1]) < 200:
                ink += 1
    share = ink / (width * height)
    print(f"{path}: {width}x{height}, {len(colours)} colours, {share:.1%} ink")
    if len(colours) < 8 or share < 0.005:
        print(f"{path}: looks blank")
        return False
    return True


def docx_mono(path):
    with zipfile.ZipFile(path) as z:
        document = z.read("word/document.xml").decode("utf-8")
        styles = z.read("word/styles.xml").decode("utf-8")
    blocks = len(re.findall(r'<w:pStyle w:val="SourceCode" ?/>', document))
    style = re.search(r'<w:style [^>]*w:styleId="SourceCode".*?</w:style>', styles, re.S)
    font = re.search(r'w:ascii="([^"]+)"', style.group(0)) if style else None
    print(f"{path}: {blocks} code paragraphs, style Source Code font {font.group(1) if font else None}")
    return blocks > 0 and font is not None and re.search(r"mono|courier|consolas", font.group(1), re.I)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    if command == "lines" and len(args) == 2:
        return 0 if lines(*args) else 1
    if command == "has" and len(args) == 2:
        return 0 if has(*args) else 1
    if command == "docx-mono" and len(args) == 1:
        return 0 if docx_mono(*args) else 1
    if command == "png-not-blank" and len(args) == 1:
        return 0 if png_not_blank(*args) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
