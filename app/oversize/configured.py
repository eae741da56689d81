"""The oversize building blocks as the settings configure them (app/settings.py)."""

from __future__ import annotations

from app.oversize.assembler import AssemblyLimits
from app.oversize.policy import TopicPolicy, topic_policy
from app.oversize.store import ClaimCheckStore, open_store
from app.settings import Settings


def store_url(settings: Settings) -> str:
    return settings.object_store_url or f"file://{(settings.data_dir / 'objects').resolve()}"


def signing_key(settings: Settings) -> bytes | None:
    secret = settings.object_store_signing_key
    value = secret.get_secret_value() if secret is not None else ""
    return value.encode() if value else None


def s3_credentials(settings: Settings) -> tuple[str, str] | None:
    secret = settings.object_store_secret_access_key
    if settings.object_store_access_key_id and secret is not None:
        return settings.object_store_access_key_id, secret.get_secret_value()
    return None


def store_from_settings(settings: Settings) -> ClaimCheckStore:
    return open_store(store_url(settings), settings.object_store_prefix,
                      endpoint_url=settings.object_store_endpoint_url,
                      region=settings.object_store_region, signing_key=signing_key(settings),
                      refresh_after_ms=settings.object_store_retention_ms // 2,
                      credentials=s3_credentials(settings))


def limits_from_settings(settings: Settings) -> AssemblyLimits:
    return AssemblyLimits(
        memory_bytes=settings.reassembly_memory_bytes,
        spill_dir=(settings.data_dir / "reassembly") if settings.reassembly_spill else None,
        expiry_s=settings.fragment_expiry_ms / 1000,
        max_message_bytes=settings.reassembly_max_message_bytes)


def policy_for(settings: Settings, topic: str) -> TopicPolicy:
    return topic_policy(topic, settings.oversize_topics)  # type: ignore[arg-type]
