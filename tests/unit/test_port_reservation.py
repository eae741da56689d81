"""tests/port_reservation.py: test brokers' ports kept out of clients' source ports."""

from __future__ import annotations

from pathlib import Path

from tests import port_reservation
from tests.port_reservation import port_set, reserved_ports


def test_the_kernel_list_format_is_read():
    assert port_set("") == set()
    assert port_set("39092,45392-45394\n") == {39092, 45392, 45393, 45394}


def test_ports_are_added_for_the_block_and_only_they_are_taken_back(tmp_path: Path,
                                                                     monkeypatch):
    kernel = tmp_path / "ip_local_reserved_ports"
    kernel.write_text("8080\n")
    monkeypatch.setattr(port_reservation, "RESERVED_PORTS", kernel)
    with reserved_ports({39092, 39192}) as reserved:
        assert reserved
        assert port_set(kernel.read_text()) == {8080, 39092, 39192}
        kernel.write_text(kernel.read_text() + ",9999")  # someone else reserves meanwhile
    assert port_set(kernel.read_text()) == {8080, 9999}


def test_without_the_right_to_reserve_the_caller_is_told(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(port_reservation, "RESERVED_PORTS", tmp_path / "missing" / "file")
    told: list[str] = []
    with reserved_ports({39092}, told.append) as reserved:
        assert not reserved
    assert told and "could not reserve ports [39092]" in told[0]
