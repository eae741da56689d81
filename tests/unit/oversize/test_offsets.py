from app.oversize.offsets import (
    MAX_METADATA,
    OffsetTracker,
    decode_metadata,
    encode_metadata,
    short_id,
)


def test_metadata_round_trip_and_overflow():
    text = encode_metadata(42, {short_id("a"), short_id("b")})
    replay = decode_metadata(text)
    assert replay.through == 42 and replay.open_sets == {short_id("a"), short_id("b")}
    many = encode_metadata(7, {short_id(str(i)) for i in range(1000)})
    assert len(many) <= MAX_METADATA and decode_metadata(many).open_sets is None
    assert decode_metadata("") is None and decode_metadata("someone else's") is None


def test_commit_never_passes_the_first_fragment_of_an_open_set():
    tracker = OffsetTracker()
    tracker.handled("t", 0, 0)  # a plain record
    tracker.hold("t", 0, "set-a", 1)
    tracker.handled("t", 0, 1)
    for offset in range(2, 10):  # other records, delivered
        tracker.handled("t", 0, offset)
    commit, metadata = tracker.position("t", 0)
    assert commit == 1
    replay = decode_metadata(metadata)
    assert replay.through == 10 and replay.open_sets == {short_id("set-a")}
    tracker.release("set-a")
    assert tracker.position("t", 0)[0] == 10


def test_after_a_restart_only_the_open_sets_are_read_again():
    tracker = OffsetTracker()
    tracker.assigned("t", 0, encode_metadata(10, {short_id("set-a")}))
    assert tracker.skips("t", 0, 3, None)  # a plain record delivered before
    assert tracker.skips("t", 0, 4, "set-b")  # a set delivered before
    assert not tracker.skips("t", 0, 5, "set-a")  # the set still open
    assert not tracker.skips("t", 0, 10, None)  # new records
    # While reading again, a commit keeps the earlier promise.
    tracker.hold("t", 0, "set-a", 1)
    tracker.handled("t", 0, 4)
    commit, metadata = tracker.position("t", 0)
    assert commit == 1 and decode_metadata(metadata).through == 10


def test_unknown_open_list_reads_every_fragment_again():
    tracker = OffsetTracker()
    tracker.assigned("t", 0, encode_metadata(10, None))
    assert not tracker.skips("t", 0, 4, "anything")
    assert tracker.skips("t", 0, 4, None)
