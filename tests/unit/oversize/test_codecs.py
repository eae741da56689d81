import os

import pytest

from app.oversize import codecs

DATA = os.urandom(100_000) + b"x" * 400_000


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_round_trip(codec):
    packed = codecs.compress(codec, DATA)
    assert len(packed) < len(DATA)
    assert codecs.decompress(codec, packed, len(DATA)) == DATA


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_output_larger_than_declared_is_refused(codec):
    with pytest.raises(codecs.CodecError, match="expands beyond"):
        codecs.decompress(codec, codecs.compress(codec, DATA), len(DATA) - 1)


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_truncated_and_corrupt_data_are_refused(codec):
    packed = codecs.compress(codec, DATA)
    with pytest.raises(codecs.CodecError):
        codecs.decompress(codec, packed[: len(packed) // 2], len(DATA))
    with pytest.raises(codecs.CodecError, match="corrupt"):
        codecs.decompress(codec, b"junk" + packed, len(DATA))


def test_unknown_codec():
    with pytest.raises(codecs.CodecError, match="unknown codec"):
        codecs.compress("brotli", b"x")
    with pytest.raises(codecs.CodecError, match="unknown codec"):
        codecs.decompress("brotli", b"x", 1)


def test_estimate_from_a_sample_tells_random_from_repetitive():
    random = os.urandom(2_000_000)
    repetitive = b"abcd" * 500_000
    assert codecs.is_sampled(len(random))
    assert codecs.estimated_size("zstd", random) > 1_900_000
    assert codecs.estimated_size("zstd", repetitive) < 20_000
