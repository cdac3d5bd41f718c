"""Image features on disk, shared by every worker of a host and by replicas mounting one folder.

The embedding store sits behind each worker's in-memory `EmbeddingCache`: a window's features are
encoded once by whichever process meets it first, and every other worker, a restarted one, or a
replica that takes the task over reads them here in milliseconds instead of running the encoder
for seconds. The folder is a `BoundedFolder` (sam2plus/boundedfolder.py): files published
atomically under names that never change, least recently used evicted past its bounds.

A file is named by the image's content digest and a hash of the rest of its key and of the model's
identity (`ModelIdentity.digest`), and carries both in a small JSON header in front of the raw
arrays (no pickle: reading runs no code). The header also names each array's dtype, shape and
place, and a CRC-32 of the arrays; a file whose header, size, identity, key or checksum does not
match is refused (and removed), so one model's features never serve another. Every failure (a
damaged, truncated, foreign or unreadable file, a full disk, a read-only folder) degrades to
encoding, logged once per kind, never an error.

Layout: MAGIC (8 bytes), the header's length (4 bytes, little-endian), the header (UTF-8 JSON),
then the arrays one after another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import torch

from . import metrics
from .boundedfolder import BoundedFolder, touch
from .files import part_file
from .logtext import logtext

__all__ = ["MAGIC", "SUFFIX", "EmbeddingStore", "file_key", "stored_key"]

log = logging.getLogger(__name__)

MAGIC = b"S2PEMB01"
SUFFIX = ".emb"
MAX_HEADER = 64 << 10
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PREAMBLE = struct.Struct("<8sI")
_HEADERS_KEPT = 100_000  # file name -> key of headers read by `keys`, forgotten past this


def file_key(key: tuple) -> list:
    """The patch key (digest, frame size, window, fill) as JSON."""
    digest, size, window, fill = key
    return [digest, list(size), list(window), None if fill is None else list(fill)]


def stored_key(value) -> tuple:
    """The patch key from its JSON form (`file_key`); ValueError if it is not one."""
    try:
        digest, size, window, fill = value
        key = (str(digest), tuple(int(v) for v in size), tuple(int(v) for v in window))
        return (*key, None if fill is None else tuple(int(v) for v in fill))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a patch key: {exc}") from None


def _name_digest(digest: str) -> str:
    return digest if digest.isalnum() and len(digest) <= 64 else hashlib.sha256(digest.encode()).hexdigest()[:40]


class EmbeddingStore:
    """Features by (patch key, model identity) in one folder, bounded in bytes and files."""

    def __init__(self, directory: str | Path, max_bytes: int, identity: str):
        self.directory = Path(directory)
        self.identity = identity
        self.folder = BoundedFolder(self.directory, max_bytes, kind="embeddings")
        self.hits = self.misses = self.stored = 0
        self._warned: set[str] = set()
        self._headers: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def path(self, key: tuple) -> Path:
        """The file of this key's features for this model."""
        text = json.dumps([self.identity, file_key(key)], separators=(",", ":"))
        return self.directory / f"{_name_digest(key[0])}-{hashlib.sha256(text.encode()).hexdigest()[:32]}{SUFFIX}"

    def contains(self, key: tuple) -> bool:
        """Whether a file of this key's features is there (it is not read)."""
        return self.path(key).exists()

    def get(self, key: tuple) -> dict | None:
        """The features stored under `key` (tensors on the CPU), or None; counted as a hit or a miss."""
        started = time.perf_counter()
        path = self.path(key)
        features = None
        try:
            features = self._read(path, key)
        except FileNotFoundError:
            pass
        except _Refused as exc:
            self._warn("refused", f"embedding store: refused {path.name} ({exc}); encoding instead")
            self._remove(path)
        except OSError as exc:
            self._warn("unreadable", f"embedding store: cannot read {path} ({exc}); encoding instead")
        with self._lock:
            if features is None:
                self.misses += 1
            else:
                self.hits += 1
        metrics.count_cache("embedding_store", features is not None)
        if features is not None:
            touch(path)
            metrics.observe_store_read(time.perf_counter() - started)
        return features

    def put(self, key: tuple, features: dict) -> bool:
        """Store the features under `key` once (a file already there is kept); False when they
        could not be stored (too big, a full disk, a read-only folder: logged once)."""
        path = self.path(key)
        if path.exists():
            return False
        arrays, entries, offset, checksum = [], [], 0, 0
        for name, feature in _flat(features):
            tensor, dims = _in_memory_order(feature.detach().to("cpu"))
            arrays.append((name, tensor))
            nbytes = tensor.numel() * tensor.element_size()
            shape = list(tensor.shape)
            entries.append({"name": name, "dtype": _dtype_name(tensor), "shape": shape, "dims": dims, "offset": offset})
            offset += nbytes
            checksum = zlib.crc32(_bytes(tensor), checksum)
        header = json.dumps(
            {"identity": self.identity, "key": file_key(key), "arrays": entries, "bytes": offset, "crc32": checksum}
        ).encode()
        if offset + len(header) > self.folder.max_bytes:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with part_file(self.directory, SUFFIX) as part:
                with open(part.fd, "wb", closefd=False) as handle:
                    handle.write(_PREAMBLE.pack(MAGIC, len(header)) + header)
                    for _, tensor in arrays:
                        handle.write(_bytes(tensor))
                _, created = self.folder.publish(part, path)
        except OSError as exc:
            self._warn(
                "unwritable", f"embedding store: cannot write in {self.directory} ({exc}); features stay in memory"
            )
            return False
        if created:
            with self._lock:
                self.stored += 1
            metrics.set_store_bytes(self.folder.usage()[0])
        return created

    def keys(self, digest: str) -> list[tuple]:
        """The keys of this image's windows stored for this model (headers read once per file)."""
        prefix = _name_digest(digest) + "-"
        found = []
        try:
            names = [entry.name for entry in os.scandir(self.directory) if entry.name.startswith(prefix)]
        except OSError:
            return []
        for name in names:
            if not name.endswith(SUFFIX):
                continue
            key = self._headers.get(name)
            if key is None:
                key = self._key_of(self.directory / name)
                if key is not None:  # a refused file is read again: it may be replaced by a good one
                    if len(self._headers) > _HEADERS_KEPT:
                        self._headers.clear()
                    self._headers[name] = key
            if key is not None and key[0] == digest:
                found.append(key)
        return found

    def clear(self) -> None:
        """Delete every stored embedding of this folder (a cold start, in the benchmark)."""
        for path in self.directory.glob(f"*{SUFFIX}"):
            self._remove(path)

    def discard(self, digest: str) -> int:
        """Delete this model's stored windows of the image with this content digest; returns how many."""
        keys = self.keys(digest)
        for key in keys:
            self._remove(self.path(key))
        return len(keys)

    def _key_of(self, path: Path) -> tuple | None:
        try:
            with open(path, "rb") as file:
                header = _read_header(file, os.fstat(file.fileno()).st_size)
            if header["identity"] != self.identity:
                return None
            key = stored_key(header["key"])
        except (OSError, _Refused, ValueError):
            return None
        return key if self.path(key).name == path.name else None

    def _read(self, path: Path, key: tuple) -> dict:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header = _read_header(file, size)
            if header.get("identity") != self.identity:
                raise _Refused("another model's features")
            if header.get("key") != file_key(key):
                raise _Refused("another window's features")
            if file.tell() + header["bytes"] != size:  # checked before anything of that size is allocated
                raise _Refused(f"truncated or overlong: {size} bytes")
            payload = bytearray(header["bytes"])
            if file.readinto(payload) != len(payload):
                raise _Refused(f"truncated while read: {size} bytes")
        if zlib.crc32(payload) != header.get("crc32"):
            raise _Refused("checksum mismatch")
        return _unflatten(_arrays(payload, header["arrays"]))

    def _remove(self, path: Path) -> None:
        try:
            self.folder.remove(path)
        except OSError:
            pass  # a read-only folder: the file stays refused

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s", logtext(message, 600))


class _Refused(ValueError):
    """A stored file that does not hold what its name promises."""


def _read_header(file, size: int) -> dict:
    preamble = file.read(_PREAMBLE.size)
    if len(preamble) != _PREAMBLE.size:
        raise _Refused("truncated header")
    magic, length = _PREAMBLE.unpack(preamble)
    if magic != MAGIC or length > MAX_HEADER or _PREAMBLE.size + length > size:
        raise _Refused("not an embedding file of this format")
    try:
        header = json.loads(file.read(length))
    except (UnicodeDecodeError, ValueError):
        raise _Refused("damaged header") from None
    if not isinstance(header, dict) or not isinstance(header.get("bytes"), int) or header["bytes"] < 0:
        raise _Refused("damaged header")
    if not isinstance(header.get("arrays"), list):
        raise _Refused("damaged header")
    return header


def _arrays(payload: bytearray, entries: list) -> list[tuple[str, torch.Tensor]]:
    """The header's arrays as tensors over `payload` (no copy); each must fit inside it."""
    arrays = []
    try:
        for entry in entries:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            count = 1
            for n in shape:
                count *= n
            offset = int(entry["offset"])
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            if offset < 0 or min(shape, default=1) < 0 or offset + nbytes > len(payload):
                raise _Refused("an array outside the file")
            dims = [int(d) for d in entry["dims"]]
            if sorted(dims) != list(range(len(shape))):
                raise _Refused("damaged header (dims)")
            tensor = torch.frombuffer(payload, dtype=dtype, count=count, offset=offset) if count else torch.empty(0)
            arrays.append((str(entry["name"]), tensor.reshape(shape).permute(dims)))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _Refused(f"damaged header ({type(exc).__name__})") from None
    return arrays


def _flat(features: dict):
    """(name, tensor) of SAM2's features: `image_embed` and `high_res_feats.0`, `.1`."""
    for name, value in features.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        else:
            for index, tensor in enumerate(value):
                yield f"{name}.{index}", tensor


def _in_memory_order(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The tensor as a contiguous one whose `permute(dims)` is the tensor with its strides (SAM2's
    `image_embed` is channels-last): the decoder's arithmetic depends on the layout, so features
    read back must have the layout they were made with to give the same masks bit for bit."""
    order = sorted(range(tensor.dim()), key=lambda d: -tensor.stride(d))
    stored = tensor.permute(order).contiguous()  # no copy when the tensor is dense
    dims = [order.index(d) for d in range(tensor.dim())]
    return stored, dims


def _unflatten(arrays: list[tuple[str, torch.Tensor]]) -> dict:
    features: dict = {}
    for name, tensor in arrays:
        base, _, index = name.partition(".")
        if index:
            features.setdefault(base, []).append(tensor)
        else:
            features[base] = tensor
    return features


def _dtype_name(tensor: torch.Tensor) -> str:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cannot store {tensor.dtype} features")
    return name


def _bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
