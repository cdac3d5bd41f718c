#!/usr/bin/env python3
"""Download the SAM 2.1 checkpoints into a directory, once.

    download-checkpoints.py DIR [NAME ...] [--if-missing CHECKPOINT]

Fetches the named checkpoints (default: all four) from Meta's public host, or from
$SAM2_CHECKPOINT_BASE_URL. A file already in DIR with the expected size is kept. Each
download goes to NAME.part, is checked against the expected size and SHA-256, and only
then renamed to NAME; on any failure, Ctrl-C or SIGTERM the .part file is removed.

--if-missing CHECKPOINT (a file name in DIR, an absolute path, or `untrained`) does
nothing when that checkpoint is already there, and fails when it is still missing after
the downloads (a custom checkpoint that must be supplied by hand).

Meta publishes no checksums: the sizes and SHA-256 below are those of the files served
at the 092824 release URLs, as recorded independently by several public projects.
"""

import argparse
import hashlib
import http.client
import os
import signal
import sys
import urllib.request
from pathlib import Path

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CHUNK = 1 << 20
TIMEOUT_S = 60

# name: (size in bytes, sha256)
CHECKPOINTS = {
    "sam2.1_hiera_tiny.pt": (156008466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    "sam2.1_hiera_small.pt": (184416285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    "sam2.1_hiera_base_plus.pt": (323606802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    "sam2.1_hiera_large.pt": (898083611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
}


class DownloadError(Exception):
    """A checkpoint could not be fetched or did not verify."""


def fetch(url: str, dest: Path, size: int, sha256: str) -> None:
    """Stream url into dest via dest.part, verifying size and SHA-256 before the rename."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(part, "wb") as out:
            announced = resp.headers.get("Content-Length")
            if announced is not None and int(announced) != size:
                raise DownloadError(f"{url}: server announces {announced} bytes, expected {size}")
            digest, received = hashlib.sha256(), 0
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if received != size:
            raise DownloadError(f"{url}: received {received} bytes, expected {size}")
        if digest.hexdigest() != sha256:
            raise DownloadError(f"{url}: SHA-256 {digest.hexdigest()}, expected {sha256}")
        os.replace(part, dest)
    except (OSError, http.client.HTTPException) as exc:  # network, HTTP status, truncation, disk
        raise DownloadError(f"{url}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)


def checkpoint_present(directory: Path, checkpoint: str) -> bool:
    """True when CHECKPOINT (name in directory, absolute path, or `untrained`) needs nothing."""
    return checkpoint == "untrained" or (directory / checkpoint).is_file()


def download(directory: Path, names: list[str], base_url: str) -> None:
    """Fetch each named checkpoint into directory unless a file of the right size is there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        size, sha256 = CHECKPOINTS[name]
        dest = directory / name
        if dest.is_file() and dest.stat().st_size == size:
            print(f"skip {dest} (present)", flush=True)
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        if not os.access(directory, os.W_OK):
            raise DownloadError(
                f"{directory} is not writable by uid {os.getuid()}, so {name} cannot be downloaded:"
                " make the checkpoint store writable for it, or put the checkpoint there yourself"
            )
        print(f"fetch {url} -> {dest}", flush=True)
        fetch(url, dest, size, sha256)
        print(f"ok {dest} ({size} bytes, SHA-256 verified)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(CHECKPOINTS)}")
    parser.add_argument("--if-missing", metavar="CHECKPOINT", help="do nothing when this checkpoint is present")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(CHECKPOINTS))
    if unknown:
        parser.error(f"unknown checkpoint(s) {', '.join(unknown)}; known: {', '.join(CHECKPOINTS)}")
    if args.if_missing and checkpoint_present(args.directory, args.if_missing):
        print(f"{args.if_missing} is present: nothing to download", flush=True)
        return 0
    # docker stop sends SIGTERM: turn it into an exception so the .part file is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        download(
            args.directory,
            args.names or list(CHECKPOINTS),
            os.environ.get("SAM2_CHECKPOINT_BASE_URL", DEFAULT_BASE_URL),
        )
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.if_missing and not checkpoint_present(args.directory, args.if_missing):
        print(
            f"error: {args.if_missing} is not a downloadable checkpoint; put it into {args.directory} yourself",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
