#!/usr/bin/env python3
"""Git clean filter `envsecrets`: blank secret values in env files on staging.

Reads an env file on stdin and writes it to stdout with the values of
LABEL_STUDIO_API_KEY, LABEL_STUDIO_ACCESS_TOKEN and BASIC_AUTH_PASS emptied
(`KEY=secret  # note` becomes `KEY=  # note`, `KEY="secret"` becomes `KEY=""`), on
commented-out lines too. Every other byte, line endings included, passes through unchanged.

One-time setup per clone (see Secret redaction in docs/deployment.md):

    git config filter.envsecrets.clean 'python3 scripts/clean-env-secrets.py'
    git config filter.envsecrets.smudge cat
    git config filter.envsecrets.required true
"""

import re
import sys

SECRET_KEYS = (b"LABEL_STUDIO_API_KEY", b"LABEL_STUDIO_ACCESS_TOKEN", b"BASIC_AUTH_PASS")

# prefix (indent, `#` of a commented-out line, `export`, key, `=`), then the value.
ASSIGNMENT = re.compile(rb"^(\s*(?:#\s*)?(?:export\s+)?(?:" + b"|".join(SECRET_KEYS) + rb")\s*=)([^\r\n]*)")
# A quoted value ends at its closing quote; an unquoted one at ` #` (a comment).
QUOTED = re.compile(rb"""^("(?:[^"\\]|\\.)*"|'[^']*')(.*)$""")
UNQUOTED = re.compile(rb"^(.*?)(\s+#.*|\s*)$")


def redact_value(value: bytes) -> bytes:
    """The value with its secret part emptied and any trailing comment kept."""
    quoted = QUOTED.match(value)
    if quoted:
        return quoted.group(1)[:1] * 2 + quoted.group(2)
    if value[:1] in (b'"', b"'"):  # unterminated quote: drop the whole rest of the line
        return b""
    return UNQUOTED.match(value).group(2)


def redact(line: bytes) -> bytes:
    """One line (with its ending), secret value emptied if it assigns a secret key."""
    match = ASSIGNMENT.match(line)
    if not match:
        return line
    return match.group(1) + redact_value(match.group(2)) + line[match.end() :]


def main() -> None:
    for line in sys.stdin.buffer.read().splitlines(keepends=True):
        sys.stdout.buffer.write(redact(line))


if __name__ == "__main__":
    main()
