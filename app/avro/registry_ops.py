"""`recovery schemas push` and `recovery schemas check --registry`: schemas/ against a
Confluent-compatible registry (Confluent Schema Registry, Apicurio's ccompat API, Karapace,
Redpanda). The CLI wiring is thin; everything that talks to the registry is here.

Every failure is one plain line: RegistryOpsError (the registry refused: incompatible or
invalid) or SchemaRegistryUnavailable (it could not be asked).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.avro.catalog import SchemaCatalog
from app.avro.codec import SchemaRegistryUnavailable, SubjectStrategy, registry_subject

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryOpsError(Exception):
    """The registry refused what was asked; the message is one line."""


@dataclass(frozen=True)
class CheckResult:
    compatible: bool
    registry_subject: str
    compatibility: str | None  # the subject's mode as the registry reports it
    reason: str | None  # the registry's explanation when incompatible


class RegistryApi:
    """The few Confluent REST calls the verbs need (urllib: no client state, exact errors)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/{path}", data=data, method=method,
            headers={"Content-Type": _CONTENT_TYPE, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _HttpError(exc.code, _message(exc.read())) from None
        except (OSError, ValueError) as exc:  # refused, timed out, not JSON
            raise SchemaRegistryUnavailable(f"schema registry at {self.url}: {exc}") from None


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _message(body: bytes) -> str:
    try:
        answer = json.loads(body)
        text = answer.get("message") or answer.get("error_message") or body.decode()
    except (ValueError, AttributeError):
        text = body.decode(errors="replace")
    return " ".join(str(text).split())[:400]


def _subject_path(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def push(catalog: SchemaCatalog, registry_url: str, strategy: SubjectStrategy | str,
         topic_prefix: str = "") -> Iterator[str]:
    """Register every version in schemas/, in lock-id order, after setting each subject's
    compatibility mode, so the registry judges each version as it arrives. Yields one line
    per version; a refused version raises RegistryOpsError (later versions are not sent)."""
    api = RegistryApi(registry_url)
    versions = sorted((v for s in catalog.subjects.values() for v in s.versions),
                      key=lambda v: v.schema_id)
    configured: set[str] = set()
    for version in versions:
        subject = catalog.subject(version.subject)
        name = registry_subject(subject, strategy, topic_prefix, version.schema)
        if name not in configured:
            try:
                api.call("PUT", f"config/{_subject_path(name)}",
                         {"compatibility": subject.compatibility})
            except _HttpError as exc:
                raise RegistryOpsError(f"{registry_url} refused compatibility "
                                       f"{subject.compatibility} for subject {name} "
                                       f"({exc})") from None
            configured.add(name)
        try:
            answer = api.call("POST", f"subjects/{_subject_path(name)}/versions",
                              {"schema": json.dumps(version.schema), "schemaType": "AVRO"})
        except _HttpError as exc:
            what = "as incompatible" if exc.status == 409 else "as invalid" \
                if exc.status == 422 else ""
            raise RegistryOpsError(
                f"{registry_url} refused {version.subject} v{version.version} under subject "
                f"{name} {what} ({subject.compatibility}, {exc})".replace("  ", " ")) from None
        registered = int(answer["id"])
        note = "" if registered == version.schema_id else \
            f"; the lock file has id {version.schema_id} (see docs/schemas.md)"
        yield (f"{version.subject} v{version.version}: id {registered} under {name} "
               f"({subject.compatibility}){note}")


def check(schema: Any, subject_name: str, catalog: SchemaCatalog, registry_url: str,
          strategy: SubjectStrategy | str, topic_prefix: str = "") -> CheckResult:
    """Ask the registry whether `schema` may join the subject, against every version its
    compatibility mode names (POST /compatibility/subjects/{subject}/versions)."""
    api = RegistryApi(registry_url)
    name = registry_subject(catalog.subject(subject_name), strategy, topic_prefix, schema)
    try:
        answer = api.call("POST", f"compatibility/subjects/{_subject_path(name)}/versions"
                                  "?verbose=true",
                          {"schema": json.dumps(schema), "schemaType": "AVRO"})
    except _HttpError as exc:
        if exc.status == 404:
            raise RegistryOpsError(f"subject {name} is not in the registry at {registry_url}; "
                                   "run `recovery schemas push` first") from None
        raise RegistryOpsError(f"{registry_url} could not check {name} ({exc})") from None
    mode = None
    try:
        config = api.call("GET", f"config/{_subject_path(name)}")
        mode = config.get("compatibilityLevel") or config.get("compatibility")
    except _HttpError:
        pass
    reasons = answer.get("messages") or answer.get("reason")
    if isinstance(reasons, list):
        reasons = "; ".join(str(r) for r in reasons)
    reason = " ".join(str(reasons).split())[:600] if reasons else None
    return CheckResult(bool(answer.get("is_compatible")), name, mode, reason)
