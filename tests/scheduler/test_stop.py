"""Stop strings across token boundaries: held-back text, and the stop text never emitted."""

from astrai.scheduler.stop import StopMatcher


def feed(matcher, pieces):
    out, matched = [], None
    for piece in pieces:
        text, matched = matcher.push(piece)
        out.append(text)
        if matched is not None:
            break
    return out, matched


def test_stop_spanning_three_pieces_is_cut_and_not_emitted():
    out, matched = feed(StopMatcher(["END"]), ["hello E", "N", "D tail"])
    assert "".join(out) == "hello "
    assert matched == "END"
    assert out[0] == "hello "  # "E" was held back: it could start "END"


def test_held_prefix_released_when_it_stops_matching():
    m = StopMatcher(["END"])
    out, matched = feed(m, ["ab E", "Nx", "yz"])
    assert matched is None
    assert "".join(out) + m.flush() == "ab ENxyz"
    assert out[:2] == ["ab ", "ENx"]


def test_earliest_of_several_stops_wins():
    out, matched = feed(StopMatcher(["xyz", "b"]), ["a", "bcxyz"])
    assert "".join(out) == "a" and matched == "b"


def test_flush_returns_held_tail():
    m = StopMatcher(["\n\n"])
    text, matched = m.push("line\n")
    assert (text, matched) == ("line", None)
    assert m.flush() == "\n"


def test_no_stops_passes_through():
    m = StopMatcher([])
    assert m.push("anything") == ("anything", None)
