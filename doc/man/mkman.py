#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Build a man page from a roff template and sections of README.md.

The README is the one source of the tables and the text they share (the
device ABI, the shim's settings, the statistics fields, the command's
options): a template line

    .\\" @README ## Heading text

is replaced by that README section (up to the next heading of the same or a
higher level), converted from the README's Markdown subset to man(7) roff:
paragraphs, "* " lists, fenced and indented code, tables (tbl), ### and
#### subheadings, `code`, **bold**, *italics* and [links](...).  A heading
that is not in the README is an error, so a renamed section breaks the
build instead of silently dropping text.

Usage: mkman.py README.md TEMPLATE OUTPUT VERSION
"""

import re
import sys

DIRECTIVE = re.compile(r'^\.\\" @README (#+) (.+)$')
SPECIAL = {"\u2014": "\\(em", "\u2013": "\\(en", "\u00b5": "\\(mc", "\u00d7": "\\(mu",
           "\u2026": "\\&...", "\u2192": "\\(->", "\u2264": "\\(<=", "\u2265": "\\(>=",
           "\u2019": "'", "\u201c": "\\(lq", "\u201d": "\\(rq"}


def escape(text):
    """Plain text to roff: backslashes, dashes and non-ASCII characters."""
    out = []
    for ch in text.replace("\\", "\\e"):
        if ch in SPECIAL:
            out.append(SPECIAL[ch])
        elif ord(ch) > 127:
            out.append("\\[u%04X]" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def inline(text):
    """Inline Markdown to roff fonts; code spans keep their characters."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append("\\fB" + escape(part[1:-1]).replace("-", "\\-") + "\\fR")
            continue
        part = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", part)
        part = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", part)
        part = escape(part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
        part = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\\fI\1\\fR", part)
        out.append(part)
    return "".join(out)


def text_line(text):
    """A roff text line: never starting with a control character."""
    line = inline(text.strip())
    return "\\&" + line if line[:1] in (".", "'") else line


def section(readme, level, heading):
    """The lines of README section HEADING (without its heading line)."""
    lines = readme.splitlines()
    want = level + " " + heading
    for i, line in enumerate(lines):
        if line.strip() == want:
            body = []
            for rest in lines[i + 1:]:
                m = re.match(r"^(#+) ", rest)
                if m and len(m.group(1)) <= len(level):
                    break
                body.append(rest)
            return body
    raise SystemExit("mkman.py: README.md has no heading '%s'" % want)


def breakable(line):
    """Allow line breaks after _ and / in long names (narrow table columns)."""
    return re.sub(r"([_/.])(?=[\w%])", r"\1\\:", line)


def table(rows):
    """Markdown table rows to a tbl table with text blocks."""
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    header, body = cells[0], cells[2:]
    ncol = len(header)
    fmt = " ".join(["lb"] * ncol) + "\n" + " ".join(["l"] * (ncol - 1) + ["lx"]) + "."
    out = [".TS", "allbox tab(@);", fmt]
    for row in [header] + body:
        row = (row + [""] * ncol)[:ncol]
        out.append("@".join("T{\n.ad l\n" + breakable(text_line(c)) + "\nT}" for c in row))
    out.append(".TE")
    return out


def convert(lines):
    """README Markdown lines to roff lines."""
    out, para, i = [], [], 0

    def flush():
        if para:
            out.append(".PP")
            out.extend(text_line(p) for p in para)
            del para[:]

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif line.startswith("#"):
            flush()
            out.append(".SS " + inline(line.lstrip("#").strip()).replace('"', ""))
            i += 1
        elif line.startswith("```"):
            flush()
            i += 1
            code = []
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            i += 1
            out += [".PP", ".RS 4", ".nf"] + ["\\&" + escape(c) for c in code] + [".fi", ".RE"]
        elif line.startswith("    ") and not para:
            code = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                code.append(lines[i][4:])
                i += 1
            while code and not code[-1].strip():
                code.pop()
            out += [".PP", ".RS 4", ".nf"] + ["\\&" + escape(c) for c in code] + [".fi", ".RE"]
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            out += [".PP"] + table(rows)
        elif re.match(r"^[*-] ", line):
            flush()
            item = [line[2:]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i])
                i += 1
            out.append(".IP \\(bu 2")
            out.extend(text_line(p) for p in item)
        elif line.startswith("!["):
            i += 1
        else:
            para.append(line)
            i += 1
    flush()
    return out


def main(argv):
    if len(argv) != 5:
        raise SystemExit("usage: mkman.py README.md TEMPLATE OUTPUT VERSION")
    with open(argv[1], encoding="utf-8") as f:
        readme = f.read()
    with open(argv[2], encoding="utf-8") as f:
        template = f.read().replace("@VERSION@", argv[4])
    out = []
    for line in template.splitlines():
        m = DIRECTIVE.match(line)
        out.extend(convert(section(readme, m.group(1), m.group(2))) if m else [line])
    with open(argv[3], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv)
