"""Claim-check references: what a record carries instead of a payload kept in the object
store, how it is signed, and whether it may be read at all.

A reference is read only when it names the configured store (scheme, bucket or directory)
and the exact content-addressed key under the configured prefix, and carries a valid
HMAC-SHA256 signature when a signing key is configured. Anything else is poison and is never
fetched: a reference cannot make a consumer read another bucket, host or path, and a forged
one cannot point inside the prefix at an object its producer never stored."""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

FORMAT_VERSION = 1


class ReferenceRejected(ValueError):
    """A reference that must not be followed (poison)."""


@dataclass(frozen=True)
class StoreLocation:
    """Where objects live: `file:///dir` or `s3://bucket[/base]`, plus a key prefix."""

    scheme: str  # "file" or "s3"
    container: str  # the directory (file) or the bucket (s3)
    base: str  # key prefix inside the container, "" or ending with "/"

    @classmethod
    def parse(cls, url: str, prefix: str) -> StoreLocation:
        parts = urlsplit(url)
        prefix = _clean_prefix(prefix)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"object store {url!r}: a file:// store has no host")
            root = posixpath.normpath(parts.path or "/")
            if not root.startswith("/"):
                raise ValueError(f"object store {url!r}: the directory must be absolute")
            return cls("file", root, prefix)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"object store {url!r}: no bucket")
            path = parts.path.strip("/")
            return cls("s3", parts.netloc, _clean_prefix(f"{path}/{prefix}" if path else prefix))
        raise ValueError(f"object store {url!r}: only file:// and s3:// are supported")

    def key_for(self, sha256_hex: str) -> str:
        """Content-addressed key of an object: the prefix, two fan-out characters, the hash."""
        return f"{self.base}{sha256_hex[:2]}/{sha256_hex}"

    def url_for(self, sha256_hex: str) -> str:
        if self.scheme == "file":
            return f"file://{posixpath.join(self.container, self.key_for(sha256_hex))}"
        return f"s3://{self.container}/{self.key_for(sha256_hex)}"

    def describe(self) -> str:
        return f"{self.scheme}://{self.container}/{self.base}"


def _clean_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"object store prefix {prefix!r} has an empty, '.' or '..' part")
    return f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class Reference:
    url: str
    sha256: str
    size: int  # bytes of the stored object
    codec: str | None = None  # the stored object is compressed with it
    original_size: int | None = None
    signature: str | None = None

    def signed_text(self) -> bytes:
        return "\n".join(["claim-check", str(FORMAT_VERSION), self.url, self.sha256,
                          str(self.size), self.codec or "",
                          str(self.original_size if self.original_size is not None else "")
                          ]).encode()

    def signed(self, key: bytes | None) -> Reference:
        if not key:
            return self
        return Reference(self.url, self.sha256, self.size, self.codec, self.original_size,
                         hmac.new(key, self.signed_text(), hashlib.sha256).hexdigest())

    def to_bytes(self) -> bytes:
        document = {"claim_check": FORMAT_VERSION, "url": self.url, "sha256": self.sha256,
                    "size": self.size, "codec": self.codec, "original_size": self.original_size}
        if self.signature:
            document["sig"] = self.signature
        return orjson.dumps(document)

    @classmethod
    def from_bytes(cls, value: bytes | None) -> Reference:
        try:
            doc = orjson.loads(value or b"")
            if not isinstance(doc, dict) or doc.get("claim_check") != FORMAT_VERSION:
                raise ReferenceRejected("not a claim-check reference of a known version")
            sha = str(doc["sha256"])
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ReferenceRejected("sha256 is not 64 lowercase hex digits")
            size = int(doc["size"])
            original = doc.get("original_size")
            return cls(str(doc["url"]), sha, size, doc.get("codec"),
                       int(original) if original is not None else None, doc.get("sig"))
        except ReferenceRejected:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReferenceRejected(f"malformed claim-check reference: {exc}") from exc


def check(reference: Reference, location: StoreLocation, key: bytes | None,
          max_size: int) -> str:
    """The object key to read, or ReferenceRejected. Pure: nothing is fetched here."""
    if key:
        expected = hmac.new(key, reference.signed_text(), hashlib.sha256).hexdigest()
        if not reference.signature or not hmac.compare_digest(expected, reference.signature):
            raise ReferenceRejected("claim-check reference signature is missing or invalid")
    parts = urlsplit(reference.url)
    if parts.query or parts.fragment or "%" in reference.url or "\\" in reference.url:
        raise ReferenceRejected("claim-check reference URL has a query, fragment or escapes")
    if parts.scheme != location.scheme:
        raise ReferenceRejected(f"claim-check reference names a {parts.scheme or 'bare'}:// "
                                f"store; only {location.describe()} is read")
    if location.scheme == "s3":
        if parts.netloc != location.container:
            raise ReferenceRejected(f"claim-check reference names bucket {parts.netloc!r}; "
                                    f"only {location.describe()} is read")
        object_key = parts.path[1:] if parts.path.startswith("/") else parts.path
    else:
        if parts.netloc not in ("", "localhost"):
            raise ReferenceRejected(f"claim-check reference names host {parts.netloc!r}; "
                                    f"only {location.describe()} is read")
        root = location.container.rstrip("/") + "/"
        if not parts.path.startswith(root):
            raise ReferenceRejected(f"claim-check reference path is outside {location.describe()}")
        object_key = parts.path[len(root):]
    if any(seg in ("", ".", "..") for seg in object_key.split("/")):
        raise ReferenceRejected("claim-check reference path has an empty, '.' or '..' part")
    if not object_key.startswith(location.base):
        raise ReferenceRejected(f"claim-check reference is outside the prefix "
                                f"{location.describe()}")
    if object_key != location.key_for(reference.sha256):
        raise ReferenceRejected("claim-check reference key is not the content address of its "
                                "sha256")
    if reference.size < 0 or reference.size > max_size:
        raise ReferenceRejected(f"claim-check object of {reference.size} bytes exceeds the "
                                f"limit of {max_size} bytes")
    return object_key
