"""The object store for claim checks: a `file://` directory by default, or S3 (any S3 API
over HTTP: AWS, MinIO, moto's server) through boto3. Objects are content-addressed by their
SHA-256 and verified against it when fetched."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.oversize.reference import Reference, ReferenceRejected, StoreLocation, check

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The object store could not be reached or refused an operation."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified_ms: int


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None: ...

    def get(self, key: str) -> bytes: ...

    def stat(self, key: str) -> StoredObject | None: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def delete(self, key: str) -> None: ...


class FileStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        root = self.root.resolve()
        if root not in path.parents:
            raise ReferenceRejected(f"object key {key!r} resolves outside {root}")
        return path

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"object {key} not found in {self.root}") from None

    def stat(self, key: str) -> StoredObject | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return StoredObject(key, st.st_size, int(st.st_mtime * 1000))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".put-"):
                    continue
                path = Path(dirpath) / name
                st = path.stat()
                yield StoredObject(path.relative_to(self.root).as_posix(), st.st_size,
                                   int(st.st_mtime * 1000))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    def __init__(self, bucket: str, client: Any):
        self.bucket = bucket
        self.client = client

    @classmethod
    def connect(cls, bucket: str, *, endpoint_url: str | None = None,
                region: str | None = None,
                credentials: tuple[str, str] | None = None) -> S3Store:
        import boto3
        from botocore.config import Config

        keys = ({"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
                if credentials else {})
        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                              config=Config(retries={"max_attempts": 5, "mode": "standard"}),
                              **keys)
        return cls(bucket, client)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(kwargs.get("Key", "")) from None
            raise StoreError(f"s3 {what} s3://{self.bucket}/{kwargs.get('Key', '')}: "
                             f"{code or exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"s3 {what} s3://{self.bucket}: {exc}") from None

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._call("put", self.client.put_object, Key=key, Body=bytes(data)
                   if isinstance(data, memoryview) else data)

    def get(self, key: str) -> bytes:
        try:
            return self._call("get", self.client.get_object, Key=key)["Body"].read()
        except FileNotFoundError:
            raise StoreError(f"object s3://{self.bucket}/{key} not found") from None

    def stat(self, key: str) -> StoredObject | None:
        try:
            head = self._call("head", self.client.head_object, Key=key)
        except FileNotFoundError:
            return None
        return StoredObject(key, int(head["ContentLength"]),
                            int(head["LastModified"].timestamp() * 1000))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", self.client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"], int(item["Size"]),
                                   int(item["LastModified"].timestamp() * 1000))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Key=key)


class ClaimCheckStore:
    """Stores payloads under their content address and fetches them back, verified, only
    from the configured location."""

    def __init__(self, location: StoreLocation, store: ObjectStore, *,
                 signing_key: bytes | None = None, max_object_bytes: int = 4 << 30,
                 refresh_after_ms: int = 3 * 24 * 3600 * 1000):
        self.location = location
        self.store = store
        self._key = signing_key  # never logged
        self.max_object_bytes = max_object_bytes
        # An object already stored is written again when older than this, so the retention
        # collector (which deletes by age) never removes one that has just been referenced.
        self.refresh_after_ms = refresh_after_ms
        self.fetches = 0

    def __repr__(self) -> str:
        return f"ClaimCheckStore({self.location.describe()}, signed={bool(self._key)})"

    @property
    def signs(self) -> bool:
        return bool(self._key)

    def put(self, data: bytes | bytearray | memoryview, *, codec: str | None = None,
            original_size: int | None = None) -> Reference:
        digest = hashlib.sha256(data).hexdigest()
        key = self.location.key_for(digest)
        existing = self.store.stat(key)
        now = int(time.time() * 1000)
        if existing is None or existing.size != len(data) \
                or now - existing.last_modified_ms > self.refresh_after_ms:
            self.store.put(key, data)
        return Reference(self.location.url_for(digest), digest, len(data), codec,
                         original_size).signed(self._key)

    def object_key(self, reference: Reference) -> str:
        """Where a reference points, or ReferenceRejected: checked before any fetch."""
        return check(reference, self.location, self._key, self.max_object_bytes)

    def fetch(self, reference: Reference) -> bytes:
        key = self.object_key(reference)
        self.fetches += 1
        data = self.store.get(key)
        if len(data) != reference.size or hashlib.sha256(data).hexdigest() != reference.sha256:
            raise ReferenceRejected(f"object {key} does not match its SHA-256 "
                                    f"({len(data)} bytes, {reference.size} expected)")
        return data


def open_store(url: str, prefix: str, *, endpoint_url: str | None = None,
               region: str | None = None, signing_key: bytes | None = None,
               refresh_after_ms: int | None = None,
               credentials: tuple[str, str] | None = None) -> ClaimCheckStore:
    location = StoreLocation.parse(url, prefix)
    store: ObjectStore
    if location.scheme == "file":
        store = FileStore(location.container)
    else:
        store = S3Store.connect(location.container, endpoint_url=endpoint_url, region=region,
                                credentials=credentials)
    kwargs: dict[str, Any] = {}
    if refresh_after_ms is not None:
        kwargs["refresh_after_ms"] = refresh_after_ms
    return ClaimCheckStore(location, store, signing_key=signing_key, **kwargs)
